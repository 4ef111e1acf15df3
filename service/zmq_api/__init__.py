"""ZeroMQ API: prediction publisher, query server, client and wire format (not ``zmq``, which
would read as pyzmq)."""
