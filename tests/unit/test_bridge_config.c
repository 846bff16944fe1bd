/* segq-bridge's options, tokens, channels and Origin policy: defaults, SEGQ_* environment vs
 * flags, the bare --demo flag, the token secret (variable, file, too short, missing), a known
 * token vector (the same one tests/unit/test_client_tokens.py and `openssl dgst -hmac` give),
 * every refusal (missing, malformed, wrong channel, tampered, expired), channel names, and the
 * same-origin / list / any Origin rules. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bridge/bridge.h"
#include "bridge/bridge_internal.h"
#include "check.h"

static const char *const *fake_env;

static const char *env_get(const char *name) {
  for (const char *const *p = fake_env; p && p[0]; p += 2)
    if (strcmp(p[0], name) == 0) return p[1];
  return NULL;
}

static int parse(sq_bridge_config_t *cfg, const char *const *env, int argc, const char **argv,
                 sq_error_t *err) {
  fake_env = env;
  return sq_bridge_config_parse(cfg, argc, (char **)argv, env_get, err);
}

static const char *const SECRET_ENV[] = {"SEGQ_BRIDGE_TOKEN_SECRET", "0123456789abcdef", NULL};

static void test_defaults_and_precedence(void) {
  sq_bridge_config_t cfg;
  sq_error_t err;
  const char *argv[] = {"segq-bridge"};
  CHECK_EQ_INT(parse(&cfg, SECRET_ENV, 1, argv, &err), SQ_BRIDGE_RUN);
  CHECK_STR(cfg.redis.nodes[0].host, "127.0.0.1");
  CHECK_EQ_INT(cfg.redis.nodes[0].port, 6379);
  CHECK_EQ_INT(cfg.port, 8700);
  CHECK_STR(cfg.host, "127.0.0.1");
  CHECK_EQ_INT(cfg.demo, 0);
  CHECK_EQ_INT(cfg.ping_interval_s, 25);
  CHECK_EQ_INT(cfg.client_queue_max, 4096);
  CHECK_EQ_INT(cfg.secret_len, 16);
  CHECK(cfg.secret && memcmp(cfg.secret, "0123456789abcdef", 16) == 0);
  CHECK_STR(cfg.token_secret, ""); /* not kept twice */
  sq_bridge_config_free(&cfg);

  const char *env[] = {"SEGQ_BRIDGE_TOKEN_SECRET",
                       "0123456789abcdef",
                       "SEGQ_BRIDGE_PORT",
                       "9000",
                       "SEGQ_REDIS_URL",
                       "redis://:pw@redis:7000/3",
                       "SEGQ_BRIDGE_DEMO",
                       "1",
                       NULL};
  const char *argv2[] = {"segq-bridge", "--port", "9001", "--ping-interval-s=5"};
  CHECK_EQ_INT(parse(&cfg, env, 4, argv2, &err), SQ_BRIDGE_RUN);
  CHECK_EQ_INT(cfg.port, 9001); /* the flag wins over the variable */
  CHECK_EQ_INT(cfg.ping_interval_s, 5);
  CHECK_STR(cfg.redis.nodes[0].host, "redis");
  CHECK_EQ_INT(cfg.redis.nodes[0].port, 7000);
  CHECK_STR(cfg.redis.password, "pw");
  CHECK_EQ_INT(cfg.redis.db, 3);
  CHECK_EQ_INT(cfg.demo, 1);
  sq_bridge_config_free(&cfg);

  const char *argv3[] = {"segq-bridge", "--demo", "--port", "1234"};
  CHECK_EQ_INT(parse(&cfg, NULL, 4, argv3, &err), SQ_BRIDGE_RUN); /* --demo needs no secret */
  CHECK_EQ_INT(cfg.demo, 1);
  CHECK_EQ_INT(cfg.port, 1234);
  CHECK(cfg.secret == NULL);
  sq_bridge_config_free(&cfg);
}

static void expect_error(const char *const *env, int argc, const char **argv, const char *needle) {
  sq_bridge_config_t cfg;
  sq_error_t err;
  int rc = parse(&cfg, env, argc, argv, &err);
  CHECK_EQ_INT(rc, SQ_EINVAL);
  if (rc == SQ_EINVAL && !strstr(err.msg, needle))
    fprintf(stderr, "message \"%s\" does not name \"%s\"\n", err.msg, needle);
  CHECK(rc != SQ_EINVAL || strstr(err.msg, needle) != NULL);
  sq_bridge_config_free(&cfg);
}

static void test_errors(void) {
  const char *a1[] = {"segq-bridge"};
  expect_error(NULL, 1, a1, "no token secret");
  const char *short_env[] = {"SEGQ_BRIDGE_TOKEN_SECRET", "short", NULL};
  expect_error(short_env, 1, a1, "too short");
  const char *a2[] = {"segq-bridge", "--port", "0"};
  expect_error(SECRET_ENV, 3, a2, "--port");
  const char *a3[] = {"segq-bridge", "--bogus"};
  expect_error(SECRET_ENV, 2, a3, "--bogus");
  const char *a4[] = {"segq-bridge", "--demo=maybe"};
  expect_error(SECRET_ENV, 2, a4, "--demo");
  const char *a5[] = {"segq-bridge", "--allowed-origins", "example.com"};
  expect_error(SECRET_ENV, 3, a5, "allowed-origins");
  const char *a6[] = {"segq-bridge", "--token-secret-file", "/nonexistent/secret"};
  expect_error(NULL, 3, a6, "/nonexistent/secret");
  const char *a7[] = {"segq-bridge", "--redis-url", "http://x"};
  expect_error(SECRET_ENV, 3, a7, "redis://");
  const char *a8[] = {"segq-bridge", "--token-secret-file", "/etc/hostname"};
  expect_error(SECRET_ENV, 3, a8, "choose one");
  const char *a9[] = {"segq-bridge", "--demo", "--redis-url", "redis+sentinel://s1:26379/mymaster"};
  expect_error(NULL, 4, a9, "redis://");
  /* the same URL forms as the worker: a Sentinel URL is accepted */
  sq_bridge_config_t cfg;
  sq_error_t err;
  const char *a10[] = {"segq-bridge", "--redis-url", "redis+sentinel://u:p@s1,s2:26380/mymaster/2"};
  CHECK_EQ_INT(parse(&cfg, SECRET_ENV, 3, a10, &err), SQ_BRIDGE_RUN);
  CHECK_EQ_INT(cfg.redis.sentinel, 1);
  CHECK_EQ_INT(cfg.redis.nnodes, 2);
  CHECK_STR(cfg.redis.master, "mymaster");
  CHECK_STR(cfg.redis.user, "u");
  CHECK_EQ_INT(cfg.redis.db, 2);
  sq_bridge_config_free(&cfg);
}

static void test_secret_file(void) {
  char path[] = "/tmp/segq-bridge-secret-XXXXXX";
  int fd = mkstemp(path);
  CHECK(fd >= 0);
  if (fd < 0) return;
  CHECK_EQ_INT(write(fd, "from-a-file-0123456789\n", 23), 23);
  close(fd);
  sq_bridge_config_t cfg;
  sq_error_t err;
  const char *argv[] = {"segq-bridge", "--token-secret-file", path};
  CHECK_EQ_INT(parse(&cfg, NULL, 3, argv, &err), SQ_BRIDGE_RUN);
  CHECK_EQ_INT(cfg.secret_len, 22); /* the trailing newline is not part of it */
  CHECK(cfg.secret && memcmp(cfg.secret, "from-a-file-0123456789", 22) == 0);
  sq_bridge_config_free(&cfg);
  unlink(path);
}

static void test_tokens(void) {
  const uint8_t *secret = (const uint8_t *)"0123456789abcdef";
  char tok[SQ_BRIDGE_TOKEN_MAX];
  CHECK_EQ_INT(sq_bridge_token_mint(secret, 16, "group:upload-42", 1700000000, tok, sizeof tok), 0);
  CHECK_STR(tok, "v1.1700000000.YWfpqrCRqr0NHBTBRtyw57zpqhiAdx-bMr73cA1jZs0");
  sq_error_t err;
  CHECK_EQ_INT(sq_bridge_token_check(secret, 16, "group:upload-42", tok, 1600000000, &err), 0);
  CHECK_EQ_INT(sq_bridge_token_check(secret, 16, "group:upload-42", tok, 1700000000, &err),
               SQ_ETOKEN_EXPIRED);
  CHECK_EQ_INT(sq_bridge_token_check(secret, 16, "group:upload-43", tok, 1600000000, &err),
               SQ_ETOKEN_INVALID);
  CHECK_EQ_INT(sq_bridge_token_check((const uint8_t *)"0123456789abcdeX", 16, "group:upload-42",
                                     tok, 1600000000, &err),
               SQ_ETOKEN_INVALID);
  CHECK_EQ_INT(sq_bridge_token_check(secret, 16, "group:upload-42", NULL, 1, &err),
               SQ_ETOKEN_MISSING);
  CHECK_EQ_INT(sq_bridge_token_check(secret, 16, "group:upload-42", "", 1, &err),
               SQ_ETOKEN_MISSING);
  CHECK_EQ_INT(sq_bridge_token_check(secret, 16, "group:upload-42", "bearer abc", 1, &err),
               SQ_ETOKEN_MALFORMED);
  CHECK_EQ_INT(sq_bridge_token_check(secret, 16, "group:upload-42", "v1.x.y", 1, &err),
               SQ_ETOKEN_MALFORMED);
  /* a later expiry with the old signature: the expiry is signed too */
  char forged[SQ_BRIDGE_TOKEN_MAX];
  snprintf(forged, sizeof forged, "v1.1800000000.%s", tok + 14);
  CHECK_EQ_INT(sq_bridge_token_check(secret, 16, "group:upload-42", forged, 1750000000, &err),
               SQ_ETOKEN_INVALID);
  /* one flipped character of the signature */
  char bad[SQ_BRIDGE_TOKEN_MAX];
  snprintf(bad, sizeof bad, "%s", tok);
  bad[strlen(bad) - 1] = bad[strlen(bad) - 1] == 'A' ? 'B' : 'A';
  CHECK_EQ_INT(sq_bridge_token_check(secret, 16, "group:upload-42", bad, 1600000000, &err),
               SQ_ETOKEN_INVALID);
  CHECK(strstr(err.msg, "group:upload-42") != NULL);
  CHECK(sq_bridge_token_mint(secret, 16, "nope", 1, tok, sizeof tok) != 0);
  CHECK(sq_bridge_token_mint(secret, 16, "job:x", 1, tok, 10) != 0);
}

static void test_channels(void) {
  sq_channel_kind_t k;
  const char *name;
  CHECK_EQ_INT(sq_bridge_channel_parse("job:abc-1", &k, &name), 0);
  CHECK_EQ_INT(k, SQ_CHANNEL_JOB);
  CHECK_STR(name, "abc-1");
  CHECK_EQ_INT(sq_bridge_channel_parse("group:g.1:x", &k, &name), 0);
  CHECK_EQ_INT(k, SQ_CHANNEL_GROUP);
  CHECK_EQ_INT(sq_bridge_channel_parse("group:", &k, &name), SQ_ECHANNEL);
  CHECK_EQ_INT(sq_bridge_channel_parse("segq:gev:g", &k, &name), SQ_ECHANNEL);
  CHECK_EQ_INT(sq_bridge_channel_parse("job:a b", &k, &name), SQ_ECHANNEL);
  CHECK_EQ_INT(sq_bridge_channel_parse("job:a*", &k, &name), SQ_ECHANNEL);
  char longname[200];
  memset(longname, 'a', sizeof longname);
  memcpy(longname, "job:", 4);
  longname[4 + 129] = '\0';
  CHECK_EQ_INT(sq_bridge_channel_parse(longname, &k, &name), SQ_ECHANNEL);
  CHECK_EQ_INT(sq_bridge_channel_parse(NULL, &k, &name), SQ_ECHANNEL);
}

static void test_origins(void) {
  sq_error_t err;
  CHECK_EQ_INT(sq_bridge_origins_check("", &err), 0);
  CHECK_EQ_INT(sq_bridge_origins_check("*", &err), 0);
  CHECK_EQ_INT(sq_bridge_origins_check("https://a.example,http://b.example:8080", &err), 0);
  CHECK_EQ_INT(sq_bridge_origins_check("https://a.example/", &err), SQ_EINVAL);
  CHECK_EQ_INT(sq_bridge_origins_check("a.example", &err), SQ_EINVAL);
  CHECK_EQ_INT(sq_bridge_origins_check("https://*.example", &err), SQ_EINVAL);
  /* same origin */
  CHECK(sq_bridge_origin_allowed("", "http://127.0.0.1:8700", "127.0.0.1:8700"));
  CHECK(sq_bridge_origin_allowed("", "http://LOCALHOST:8700", "localhost:8700"));
  CHECK(!sq_bridge_origin_allowed("", "http://evil.example", "127.0.0.1:8700"));
  CHECK(!sq_bridge_origin_allowed("", "http://127.0.0.1:8701", "127.0.0.1:8700"));
  CHECK(!sq_bridge_origin_allowed("", "null", "127.0.0.1:8700"));
  CHECK(sq_bridge_origin_allowed("", NULL, "127.0.0.1:8700")); /* not a browser */
  /* a list */
  const char *list = "https://a.example,http://b.example:8080";
  CHECK(sq_bridge_origin_allowed(list, "https://a.example", "bridge:8700"));
  CHECK(sq_bridge_origin_allowed(list, "http://b.example:8080", "bridge:8700"));
  CHECK(!sq_bridge_origin_allowed(list, "http://a.example", "bridge:8700"));
  CHECK(!sq_bridge_origin_allowed(list, "https://a.example.evil", "bridge:8700"));
  CHECK(!sq_bridge_origin_allowed(list, "http://bridge:8700", "bridge:8700"));
  CHECK(sq_bridge_origin_allowed("*", "https://anything.example", "bridge:8700"));
}

static void test_json(void) {
  /* {"a": 1, "b": [1.5, "x\xff"], "c": nil, "d": bin(3)} */
  const unsigned char mp[] = {0x84, 0xa1, 'a',  0x01, 0xa1, 'b',  0x92, 0xca, 0x3f,
                              0xc0, 0x00, 0x00, 0xa2, 'x',  0xff, 0xa1, 'c',  0xc0,
                              0xa1, 'd',  0xc4, 0x03, 'a',  'b',  'c'};
  size_t len = 0;
  char *j = sq_bridge_msgpack_to_json(mp, sizeof mp, &len);
  CHECK_STR(j, "{\"a\":1,\"b\":[1.5,\"x\xef\xbf\xbd\"],\"c\":null,\"d\":\"YWJj\"}");
  free(j);
  CHECK(sq_bridge_msgpack_to_json("\xc1", 1, &len) == NULL); /* never-used byte */
  uint64_t v = 7;
  CHECK_EQ_INT(sq_bridge_msgpack_uint_field(mp, sizeof mp, "a", &v), 0);
  CHECK_EQ_INT(v, 1);
  CHECK_EQ_INT(sq_bridge_msgpack_uint_field(mp, sizeof mp, "zz", &v), 0);
  CHECK_EQ_INT(v, 0);
  const char *keys[] = {"seq", "state", "zero", "big"};
  const char *vals[] = {"12", "done", "007", "12345678901234567890"};
  size_t lens[] = {2, 4, 3, 20};
  j = sq_bridge_hash_to_json(keys, vals, lens, 4, &len);
  CHECK_STR(j, "{\"seq\":12,\"state\":\"done\",\"zero\":\"007\",\"big\":\"12345678901234567890\"}");
  free(j);
}

/* The Redis password out of the process list, as the worker: file > SEGQ_REDIS_PASSWORD > URL. */
static void test_redis_password(void) {
  sq_bridge_config_t cfg;
  sq_error_t err;
  const char *env[] = {"SEGQ_BRIDGE_TOKEN_SECRET", "0123456789abcdef", "SEGQ_REDIS_URL",
                       "redis://bridge:from-url@redis:7000", "SEGQ_REDIS_PASSWORD", "from-env",
                       NULL};
  const char *argv[] = {"segq-bridge"};
  CHECK_EQ_INT(parse(&cfg, env, 1, argv, &err), SQ_BRIDGE_RUN);
  CHECK_STR(cfg.redis.user, "bridge");
  CHECK_STR(cfg.redis.password, "from-env");
  sq_bridge_config_free(&cfg);

  char path[] = "/tmp/segq-bridge-redis-pw-XXXXXX";
  int fd = mkstemp(path);
  CHECK(fd >= 0);
  if (fd < 0) return;
  CHECK_EQ_INT(write(fd, "from-file\n", 10), 10);
  close(fd);
  const char *argv2[] = {"segq-bridge", "--redis-password-file", path};
  CHECK_EQ_INT(parse(&cfg, env, 3, argv2, &err), SQ_BRIDGE_RUN);
  CHECK_STR(cfg.redis.password, "from-file");
  sq_bridge_config_free(&cfg);
  unlink(path);
  const char *argv3[] = {"segq-bridge", "--redis-password-file", "/nonexistent/segq-pw"};
  CHECK(parse(&cfg, env, 3, argv3, &err) < 0);
  CHECK(strstr(err.msg, "/nonexistent/segq-pw") != NULL);
  sq_bridge_config_free(&cfg);
}

int main(void) {
  test_defaults_and_precedence();
  test_errors();
  test_secret_file();
  test_redis_password();
  test_tokens();
  test_channels();
  test_origins();
  test_json();
  CHECK_DONE();
}
