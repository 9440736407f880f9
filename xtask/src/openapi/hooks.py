"""schemathesis hooks of `cargo xtask openapi` (written out by xtask/src/openapi.rs).

1. What the local emulator cannot carry. The local stack's API emulator (`cargo
   lambda watch`) answers 500 itself, before any function runs, to a request with
   a body or a header value that is not UTF-8 (it cannot put such text into the
   Lambda event). That says nothing about the service, so such requests keep their
   shape but travel as UTF-8: a header value with non-ASCII characters is sent as
   its UTF-8 bytes (not Latin-1), and a body of random bytes (syntax fuzzing) has
   its invalid sequences replaced (U+FFFD).

2. Webhook credentials. Given the stack's webhook credentials (XTASK_OPENAPI_*
   variables; the fuzz run only), a webhook request whose generated signature or
   Authorization header is not empty gets valid ones, so that fuzzing reaches past
   authentication; an empty or missing one is left as generated (the 401/403 path).

3. The status of every answer to a documented operation is appended to
   XTASK_OPENAPI_ANSWERS, for xtask's summary.
"""

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
import urllib.parse

import schemathesis

API_URL = os.environ.get("XTASK_OPENAPI_API_URL", "").rstrip("/")
TWILIO_AUTH_TOKEN = os.environ.get("XTASK_OPENAPI_TWILIO_AUTH_TOKEN")
SENDGRID_BASIC_AUTH = os.environ.get("XTASK_OPENAPI_SENDGRID_BASIC_AUTH")
SENDGRID_SIGNING_KEY = os.environ.get("XTASK_OPENAPI_SENDGRID_SIGNING_KEY")
SENDGRID_PUBLIC_KEY = os.environ.get("XTASK_OPENAPI_SENDGRID_PUBLIC_KEY")
ANSWERS = os.environ.get("XTASK_OPENAPI_ANSWERS")
API_KEY = os.environ.get("XTASK_OPENAPI_API_KEY")

# P-256 (secp256r1), for SendGrid's ECDSA-signed Event Webhook.
P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
A = P - 3
N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
G = (
    0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296,
    0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5,
)


def _add(p1, p2):
    if p1 is None:
        return p2
    if p2 is None:
        return p1
    (x1, y1), (x2, y2) = p1, p2
    if x1 == x2 and (y1 + y2) % P == 0:
        return None
    if p1 == p2:
        slope = (3 * x1 * x1 + A) * pow(2 * y1, -1, P) % P
    else:
        slope = (y2 - y1) * pow(x2 - x1, -1, P) % P
    x3 = (slope * slope - x1 - x2) % P
    return x3, (slope * (x1 - x3) - y1) % P


def _multiply(k, point):
    result = None
    while k:
        if k & 1:
            result = _add(result, point)
        point = _add(point, point)
        k >>= 1
    return result


def _der_integer(value):
    raw = value.to_bytes(32, "big").lstrip(b"\0") or b"\0"
    if raw[0] & 0x80:
        raw = b"\0" + raw
    return b"\x02" + bytes([len(raw)]) + raw


def _sendgrid_private_key():
    """The private scalar of a base64 PKCS#8 P-256 key, checked against the public key."""
    der = base64.b64decode(SENDGRID_SIGNING_KEY)
    marker = der.index(b"\x02\x01\x01\x04\x20") + 5
    d = int.from_bytes(der[marker : marker + 32], "big")
    x, y = _multiply(d, G)
    public = base64.b64decode(SENDGRID_PUBLIC_KEY)
    if public[-65:] != b"\x04" + x.to_bytes(32, "big") + y.to_bytes(32, "big"):
        raise SystemExit("XTASK_OPENAPI_SENDGRID_SIGNING_KEY is not the key of XTASK_OPENAPI_SENDGRID_PUBLIC_KEY")
    return d


SENDGRID_D = _sendgrid_private_key() if SENDGRID_SIGNING_KEY and SENDGRID_PUBLIC_KEY else None


def _ecdsa_sign(message):
    z = int.from_bytes(hashlib.sha256(message).digest(), "big")
    while True:
        k = secrets.randbelow(N - 1) + 1
        r = _multiply(k, G)[0] % N
        s = pow(k, -1, N) * (z + r * SENDGRID_D) % N
        if r and s:
            s = min(s, N - s)
            body = _der_integer(r) + _der_integer(s)
            return base64.b64encode(b"\x30" + bytes([len(body)]) + body).decode()


def _form_pairs(body):
    pairs = []
    for key, value in body.items():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, bool):
                item = "true" if item else "false"
            pairs.append((str(key), "" if item is None else str(item)))
    return pairs


def _given(headers, name):
    """Whether the generated request carries a non-empty `name` header."""
    return any(k.lower() == name.lower() and str(v).strip() for k, v in headers.items())


def _set(headers, name, value):
    for key in [k for k in headers if k.lower() == name.lower()]:
        del headers[key]
    headers[name] = value


def _sign(case, headers):
    path = case.formatted_path
    if API_KEY and not path.startswith("/webhooks/"):
        # Every route but the webhooks takes the stack's API key (every scope).
        _set(headers, "Authorization", f"Bearer {API_KEY}")
    elif TWILIO_AUTH_TOKEN and path.startswith("/webhooks/twilio/") and isinstance(case.body, dict):
        if not _given(headers, "X-Twilio-Signature"):
            return
        encoded = urllib.parse.urlencode(_form_pairs(case.body)).encode()
        # What the service reads back, sorted by name and value, repeats once.
        pairs = sorted(set(urllib.parse.parse_qsl(encoded.decode(), keep_blank_values=True)))
        mac = hmac.new(TWILIO_AUTH_TOKEN.encode(), (API_URL + path).encode(), hashlib.sha1)
        for key, value in pairs:
            mac.update(key.encode() + value.encode())
        case.body = encoded
        _set(headers, "X-Twilio-Signature", base64.b64encode(mac.digest()).decode())
    elif SENDGRID_BASIC_AUTH and path == "/webhooks/sendgrid/inbound":
        if _given(headers, "Authorization"):
            credentials = base64.b64encode(SENDGRID_BASIC_AUTH.encode()).decode()
            _set(headers, "Authorization", f"Basic {credentials}")
    elif SENDGRID_D is not None and path == "/webhooks/sendgrid/events":
        if not _given(headers, "X-Twilio-Email-Event-Webhook-Signature"):
            return
        if isinstance(case.body, (bytes, bytearray)):
            body = bytes(case.body)
        else:
            try:
                body = json.dumps(case.body).encode()
            except (TypeError, ValueError):
                return
        timestamp = str(int(time.time()))
        case.body = body
        _set(headers, "X-Twilio-Email-Event-Webhook-Timestamp", timestamp)
        _set(headers, "X-Twilio-Email-Event-Webhook-Signature", _ecdsa_sign(timestamp.encode() + body))


@schemathesis.hook
def before_call(context, case, kwargs):
    if case.headers is None:
        case.headers = {}
    headers = case.headers
    for name, value in list(headers.items()):
        if isinstance(value, str) and not value.isascii():
            headers[name] = value.encode("utf-8", "surrogatepass").decode("latin-1")
    if isinstance(case.body, (bytes, bytearray)):
        try:
            bytes(case.body).decode("utf-8")
        except UnicodeDecodeError:
            case.body = bytes(case.body).decode("utf-8", "replace").encode("utf-8")
    _sign(case, headers)


@schemathesis.hook
def after_call(context, case, response):
    # The documented operations only, not schemathesis's probes with other methods.
    if ANSWERS and case.method.upper() == case.operation.method.upper():
        with open(ANSWERS, "a", encoding="utf-8") as answers:
            answers.write(f"{case.method.upper()} {case.operation.path} {response.status_code}\n")
