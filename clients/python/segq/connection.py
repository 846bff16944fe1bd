"""segq.connection: the one place where the Python client and the `segq` command connect to
Redis. URL forms are the C worker's (queue/redis_url.c, docs/operations.md "Redis URLs"):

    redis://[[user][:password]@]host[:port][/db]
    redis+sentinel://[[user][:password]@]host[:port][,host[:port]...]/master[/db]
    rediss://...   TLS (redis-py has it natively; the C worker goes through stunnel)

The password may also come from SEGQ_REDIS_PASSWORD_FILE (a file, one line) or
SEGQ_REDIS_PASSWORD, in that order of precedence over the URL's, so it never has to be in a
command line. Errors never show the password (mask_url). Sentinel URLs use redis-py's Sentinel:
the primary is discovered through the sentinels, READONLY (a demoted primary) forces a
rediscovery, and commands are retried across the failover."""
import os
import re
from urllib.parse import unquote

import redis
import redis.sentinel
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from . import schema

DEFAULT_URL = schema.DEFAULT["REDIS_URL"]
DEFAULT_PORT = 6379
DEFAULT_SENTINEL_PORT = 26379
MAX_NODES = 16
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


class URLError(ValueError):
    """A Redis URL that segq cannot use; the message never contains the password."""


def mask_url(url):
    """url with its password (between the userinfo's first ':' and the last '@') as '***'."""
    if not isinstance(url, str):
        return repr(url)
    i = url.find("://")
    at = url.rfind("@")
    if i < 0 or at < i:
        return url
    colon = url.find(":", i + 3, at)
    if colon < 0:
        return url
    return url[:colon + 1] + "***" + url[at:]


def _node(part, default_port, shown):
    if part.startswith("["):
        end = part.find("]")
        if end < 0:
            raise URLError("redis-url: unclosed '[' in \"%s\"" % shown)
        host, rest = part[1:end], part[end + 1:]
        if rest and not rest.startswith(":"):
            raise URLError("redis-url: junk after ']' in \"%s\"" % shown)
        port = rest[1:] if rest else None
    else:
        host, _, port = part.partition(":")
        port = port if ":" in part else None
    if not host:
        raise URLError("redis-url: \"%s\" has no host" % shown)
    if any(ch in host for ch in "@/ ?#"):
        raise URLError("redis-url: bad host in \"%s\"" % shown)
    if port is None:
        return host, default_port
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise URLError("redis-url: bad port in \"%s\"" % shown)
    return host, int(port)


def _db(s, shown):
    if not s.isdigit() or int(s) > 65535:
        raise URLError("redis-url: bad database number in \"%s\"" % shown)
    return int(s)


def parse_url(url):
    """{scheme: 'redis'|'rediss'|'sentinel', nodes: [(host, port)], master, user, password, db}.
    Raises URLError with the password masked."""
    shown = mask_url(url)
    if not url:
        raise URLError("redis-url: empty")
    for scheme, kind in (("redis+sentinel://", "sentinel"), ("rediss+sentinel://", None),
                         ("redis://", "redis"), ("rediss://", "rediss")):
        if url.startswith(scheme):
            break
    else:
        raise URLError("redis-url: \"%s\" must start with redis://, rediss:// or "
                       "redis+sentinel://" % shown)
    if kind is None:
        raise URLError("redis-url: TLS to sentinels (rediss+sentinel://) is not supported")
    rest = url[len(scheme):]
    if "?" in rest or "#" in rest:
        raise URLError("redis-url: \"%s\": query parameters are not supported (the database is "
                       "the path: redis://host/DB, redis+sentinel://host/MASTER/DB)" % shown)
    user = password = None
    at = rest.rfind("@")
    if at >= 0:
        info, rest = rest[:at], rest[at + 1:]
        u, colon, p = info.partition(":")
        user = unquote(u) or None
        password = unquote(p) if colon and p else None
    hosts, slash, path = rest.partition("/")
    out = {"scheme": kind, "user": user, "password": password, "db": 0, "master": None}
    if kind == "sentinel":
        parts = hosts.split(",")
        if len(parts) > MAX_NODES:
            raise URLError("redis-url: more than %d sentinels in \"%s\"" % (MAX_NODES, shown))
        out["nodes"] = [_node(p, DEFAULT_SENTINEL_PORT, shown) for p in parts]
        master, _, db = path.partition("/")
        if not _NAME.match(master or ""):
            raise URLError("redis-url: \"%s\" needs a master name: "
                           "redis+sentinel://host:port[,host:port...]/MASTER[/DB]" % shown)
        out["master"] = master
        if db:
            out["db"] = _db(db, shown)
    else:
        out["nodes"] = [_node(hosts, DEFAULT_PORT, shown)]
        if path:
            out["db"] = _db(path, shown)
    return out


def read_password_file(path):
    """The password in path: one line, a trailing newline dropped. Errors name the file only."""
    try:
        with open(path, "rb") as f:
            data = f.read(4097)
    except OSError as e:
        raise URLError("redis-password-file: cannot open \"%s\": %s" % (path, e.strerror))
    if len(data) > 4096:
        raise URLError("redis-password-file: \"%s\" is larger than 4 KiB" % path)
    if data.endswith(b"\n"):
        data = data[:-1]
    if data.endswith(b"\r"):
        data = data[:-1]
    if not data or b"\n" in data or b"\0" in data:
        raise URLError("redis-password-file: \"%s\" %s" % (path, "is empty" if not data else
                                                            "must hold one line"))
    return data.decode("utf-8", "replace")


def resolve_password(parsed, password=None, password_file=None):
    """The password to use: the argument, else the file (argument or SEGQ_REDIS_PASSWORD_FILE),
    else SEGQ_REDIS_PASSWORD, else the URL's. Returns (password, source)."""
    if password is not None:
        return password, "argument"
    password_file = password_file or os.environ.get("SEGQ_REDIS_PASSWORD_FILE")
    if password_file:
        return read_password_file(password_file), "file"
    if os.environ.get("SEGQ_REDIS_PASSWORD"):
        return os.environ["SEGQ_REDIS_PASSWORD"], "env"
    return parsed["password"], "url" if parsed["password"] else "none"


def _retry(attempts, cap):
    # Across a failover (seconds) or a Redis restart: each try reconnects (and, through
    # Sentinel, rediscovers the primary).
    return Retry(ExponentialBackoff(cap=cap, base=0.05), attempts)


def connect(url=None, *, password=None, password_file=None, socket_connect_timeout=5,
            socket_timeout=None, retries=None, ssl_ca_certs=None, **kw):
    """A redis.Redis for url (default $SEGQ_REDIS_URL, else DEFAULT_URL, schema.def's REDIS_URL).
    retries: how many times a command is retried after a connection error (default: 40 for
    Sentinel URLs, ~20 s across a failover; 0 for a single server). ssl_ca_certs (or
    $SEGQ_REDIS_CA_FILE) verifies a rediss:// server. Extra keywords go to redis.Redis."""
    url = url or os.environ.get("SEGQ_REDIS_URL") or DEFAULT_URL
    p = parse_url(url)
    pw, _ = resolve_password(p, password, password_file)
    common = dict(username=p["user"], password=pw, db=p["db"],
                  socket_connect_timeout=socket_connect_timeout, socket_timeout=socket_timeout)
    common.update(kw)
    if p["scheme"] == "sentinel":
        n = 40 if retries is None else retries
        if n:
            common.setdefault("retry", _retry(n, 1.0))
            common.setdefault("retry_on_error", [redis.ConnectionError, redis.TimeoutError])
        s = redis.sentinel.Sentinel(p["nodes"], socket_connect_timeout=socket_connect_timeout,
                                    sentinel_kwargs={"socket_connect_timeout": 2,
                                                     "socket_timeout": 2})
        return s.master_for(p["master"], **common)
    host, port = p["nodes"][0]
    if retries:
        common.setdefault("retry", _retry(retries, 1.0))
        common.setdefault("retry_on_error", [redis.ConnectionError, redis.TimeoutError])
    if p["scheme"] == "rediss":
        common["ssl"] = True
        ca = ssl_ca_certs or os.environ.get("SEGQ_REDIS_CA_FILE")
        if ca:
            common["ssl_ca_certs"] = ca
        common.setdefault("ssl_cert_reqs", "required")
    return redis.Redis(host=host, port=port, **common)


def connect_async(url=None, *, password=None, password_file=None, socket_connect_timeout=5,
                  socket_timeout=None, retries=None, ssl_ca_certs=None, **kw):
    """connect() for asyncio: a redis.asyncio.Redis for the same URL forms, password sources,
    retries and TLS options (Sentinel URLs through redis.asyncio.sentinel)."""
    import redis.asyncio
    import redis.asyncio.sentinel
    from redis.asyncio.retry import Retry as AsyncRetry
    url = url or os.environ.get("SEGQ_REDIS_URL") or DEFAULT_URL
    p = parse_url(url)
    pw, _ = resolve_password(p, password, password_file)
    common = dict(username=p["user"], password=pw, db=p["db"],
                  socket_connect_timeout=socket_connect_timeout, socket_timeout=socket_timeout)
    common.update(kw)
    n = (40 if p["scheme"] == "sentinel" else 0) if retries is None else retries
    if n:
        common.setdefault("retry", AsyncRetry(ExponentialBackoff(cap=1.0, base=0.05), n))
        common.setdefault("retry_on_error", [redis.ConnectionError, redis.TimeoutError])
    if p["scheme"] == "sentinel":
        s = redis.asyncio.sentinel.Sentinel(p["nodes"],
                                            socket_connect_timeout=socket_connect_timeout,
                                            sentinel_kwargs={"socket_connect_timeout": 2,
                                                             "socket_timeout": 2})
        return s.master_for(p["master"], **common)
    host, port = p["nodes"][0]
    if p["scheme"] == "rediss":
        common["ssl"] = True
        ca = ssl_ca_certs or os.environ.get("SEGQ_REDIS_CA_FILE")
        if ca:
            common["ssl_ca_certs"] = ca
        common.setdefault("ssl_cert_reqs", "required")
    return redis.asyncio.Redis(host=host, port=port, **common)


# permcheck.lua reports refusals as (command, kind, error) triples.
def check_access(r, prefix, load_script, role="client"):
    """Raises PermissionError naming what this account may not do (commands, keys, channels),
    by running queue/scripts/permcheck.lua (works without the ACL command). None if all is
    allowed."""
    import secrets
    from ._ops import permcheck_problems
    script = r.register_script(load_script("permcheck"))
    try:
        out = script(keys=[], args=[prefix, secrets.token_hex(8), role])
    except redis.exceptions.NoPermissionError as e:
        raise PermissionError("the Redis user may not run scripts (EVALSHA/EVAL/SCRIPT LOAD): %s"
                              % e)
    problem = permcheck_problems(prefix, out)
    if problem:
        raise PermissionError(problem)
    return None
