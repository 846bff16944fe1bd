"""Channel tokens for segq-bridge (docs/bridge.md "Tokens"): the backend signs which channel a
browser may follow, and until when, with the secret it shares with the bridge; the bridge checks
the signature (HMAC-SHA256, constant-time) and the expiry before it serves a subscription or a
result. Standard library only (hmac, hashlib).

    from segq import tokens
    t = tokens.mint(secret, tokens.group_channel("upload-42"), ttl=3600)
    # hand t to the page: SegqBridge.subscribe("group:upload-42", {token: t})
"""
import base64
import hashlib
import hmac
import re
import time

_DOMAIN = b"segq-bridge-v1\n"
_NAME = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_CHANNEL = re.compile(r"^(job|group):([A-Za-z0-9._:-]{1,128})$")
_TOKEN = re.compile(r"^v1\.([0-9]{1,20})\.([A-Za-z0-9_-]{43})$")


class TokenError(ValueError):
    """A token that does not grant the channel; .code is the bridge's refusal code
    (token_missing, token_malformed, token_invalid, token_expired, channel_invalid)."""

    def __init__(self, code, message):
        super().__init__("%s: %s" % (code, message))
        self.code = code


def job_channel(job_id):
    """The bridge channel of one job ("job:<id>")."""
    if not _NAME.match(job_id or ""):
        raise TokenError("channel_invalid", "job id %r is not 1-128 of [A-Za-z0-9._:-]" % (job_id,))
    return "job:" + job_id


def group_channel(group):
    """The bridge channel of a group ("group:<group>")."""
    if not _NAME.match(group or ""):
        raise TokenError("channel_invalid", "group %r is not 1-128 of [A-Za-z0-9._:-]" % (group,))
    return "group:" + group


def _secret(secret):
    if isinstance(secret, str):
        secret = secret.encode()
    if not secret or len(secret) < 16:
        raise ValueError("the token secret must be at least 16 bytes (the bridge refuses shorter)")
    return secret


def _signature(secret, channel, expires):
    mac = hmac.new(secret, _DOMAIN + channel.encode() + b"\n" + str(expires).encode(),
                   hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def mint(secret, channel, ttl=3600, now=None):
    """A token granting `channel` ("job:<id>" or "group:<group>") for `ttl` seconds from `now`
    (default: the current time). `secret` is str or bytes, the bridge's --token-secret."""
    if not _CHANNEL.match(channel or ""):
        raise TokenError("channel_invalid", "%r is not job:<id> or group:<group>" % (channel,))
    if ttl <= 0:
        raise ValueError("ttl must be positive")
    expires = int(now if now is not None else time.time()) + int(ttl)
    return "v1.%d.%s" % (expires, _signature(_secret(secret), channel, expires))


def check(secret, channel, token, now=None):
    """Raises TokenError unless `token` grants `channel` now; the same decision as the bridge."""
    if not token:
        raise TokenError("token_missing", "no token")
    m = _TOKEN.match(token)
    if not m:
        raise TokenError("token_malformed", "token is not v1.<expiry>.<signature>")
    expires = int(m.group(1))
    if not hmac.compare_digest(_signature(_secret(secret), channel, expires), m.group(2)):
        raise TokenError("token_invalid", "token was not signed for channel %s" % channel)
    if expires <= int(now if now is not None else time.time()):
        raise TokenError("token_expired", "token expired")
    return True
