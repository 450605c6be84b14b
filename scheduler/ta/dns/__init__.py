"""A small DNS stub resolver on the standard library (RFC 1035 wire format, asyncio I/O).

``wire`` encodes queries and decodes answers (pure); ``resolver`` sends them over UDP
(TCP when truncated) to the nameservers of ``/etc/resolv.conf`` or ``--resolver``, with a
TTL cache; ``destinations`` turns a mail domain into the ordered hosts and addresses that
RFC 5321 section 5 asks for (MX, null MX, implicit MX, address literals).
"""
