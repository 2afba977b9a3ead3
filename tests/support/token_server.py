#!/usr/bin/env python3
"""A minimal Docker registry token service for tests (stdlib + the openssl CLI).

    token_server.py PORT KEY.pem CERT.pem USER PASSWORD [LIFETIME [LOG]]

Answers GET /token?service=S&scope=repository:NAME:ACTIONS... for the given basic-auth
user with an RS256 JWT whose x5c header carries CERT, as CNCF distribution verifies
against its rootcertbundle. Anyone else gets 401. Tokens live LIFETIME to LIFETIME+1 seconds
(default 600; `exp` has whole seconds); distribution accepts tokens up to 60 s past
`exp`, so `exp` is set that much earlier. Each token issued appends a line to LOG.
"""
import base64, json, subprocess, sys, time, uuid
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs, urlparse

port, key, cert, user, password = sys.argv[1:6]
lifetime = int(sys.argv[6]) if len(sys.argv) > 6 else 600
log = sys.argv[7] if len(sys.argv) > 7 else None
LEEWAY = 60  # distribution's registry/auth/token: Leeway = 60 * time.Second
der = subprocess.run(["openssl", "x509", "-in", cert, "-outform", "DER"], check=True, capture_output=True).stdout
x5c = base64.b64encode(der).decode()
expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def b64u(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.headers.get("Authorization") != expected:
            self.send_response(401)
            self.end_headers()
            return
        query = parse_qs(urlparse(self.path).query)
        access = []
        for scope in query.get("scope", []):
            for part in scope.split(" "):
                kind, name, actions = part.split(":")
                access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        header = {"alg": "RS256", "typ": "JWT", "x5c": [x5c]}
        claims = {"iss": "archpack-test-issuer", "sub": user, "aud": query.get("service", [""])[0],
                  "exp": int(time.time() + lifetime + 1) - LEEWAY, "nbf": now - 10, "iat": now, "jti": uuid.uuid4().hex, "access": access}
        signing_input = b64u(json.dumps(header).encode()) + "." + b64u(json.dumps(claims).encode())
        signature = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key], input=signing_input.encode(),
                                   check=True, capture_output=True).stdout
        token = signing_input + "." + b64u(signature)
        body = json.dumps({"token": token, "access_token": token, "expires_in": lifetime}).encode()
        if log:
            with open(log, "a") as f:
                f.write(" ".join(query.get("scope", [])) + "\n")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


HTTPServer(("127.0.0.1", int(port)), Handler).serve_forever()
