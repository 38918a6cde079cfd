"""End-to-end encrypted topics: what the relay, the broker and the cloud see is ciphertext.

``jwe`` is the wire format (JWE compact, RFC 7516, ``alg: dir`` + ``enc: A256GCM``, sealed
by joserfc), ``seal`` turns a Message into its routing outside and encrypted inside and
back, ``keys`` makes and encodes keys, ``keystore`` keeps them (the OS keyring, or a 0600
file), ``files`` seals attachments with a key of their own (carried inside the JWE) and
opens what the agent downloads. The first three do no I/O. docs/E2E.md is the contract for
publishers in other languages.
"""
