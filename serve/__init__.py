"""`facelink serve`: Amazon Rekognition's wire protocol (JSON 1.1 + SigV4) in front of FaceLink's
Python API, so boto3, the aws CLI and any AWS SDK work by changing only ``endpoint_url``."""
