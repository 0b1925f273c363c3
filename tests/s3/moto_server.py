"""An S3-compatible server for the tests: moto's, on 127.0.0.1.

Usage: python3 moto_server.py [PORT]   (no PORT: the OS picks one)
Prints "PORT <n>" once it listens, then serves until its stdin closes.
"""
import sys

from moto.server import ThreadedMotoServer

server = ThreadedMotoServer(ip_address="127.0.0.1", port=int(sys.argv[1]) if len(sys.argv) > 1 else 0, verbose=False)
server.start()
print(f"PORT {server.get_host_and_port()[1]}", flush=True)
sys.stdin.read()
server.stop()
