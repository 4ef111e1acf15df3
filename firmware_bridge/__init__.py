"""Wire protocol, transports and interlocks between corticast and the stimulator firmware."""
