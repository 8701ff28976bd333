"""Models: manifest, provisioning (fetch, verify, convert, quantize), runtimes and the face engine."""
