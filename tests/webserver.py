"""A small web server for one end of a test's tunnel, run as
`python -c SCRIPT HOST PORT BODY [CERT KEY]`: it prints "listening" once it
listens, then answers every GET with BODY, in which {client} and {path} become
the client's address and the path asked for; over TLS when given a
certificate and its key."""

SCRIPT = """
    import http.server, ssl, sys
    host, port, body = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            data = body.format(client=self.client_address[0], path=self.path).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        def log_message(self, *args):
            pass
    server = http.server.HTTPServer((host, port), Handler)
    if len(sys.argv) > 5:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(sys.argv[4], sys.argv[5])
        server.socket = context.wrap_socket(server.socket, server_side=True)
    print("listening", flush=True)
    server.serve_forever()
"""
