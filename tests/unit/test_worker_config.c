/* Worker configuration: defaults, SEGQ_* environment vs flags precedence, Redis URL forms, and
 * rejection of bad flags and values with a message naming them. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "gpu/gpu.h"
#include "queue/queue.h"
#include "worker/config.h"
#include "worker/worker.h"

/* A fake environment: NULL-terminated name/value pairs set per test. */
static const char *const *fake_env;

static const char *env_get(const char *name) {
  for (const char *const *p = fake_env; p && p[0]; p += 2)
    if (strcmp(p[0], name) == 0) return p[1];
  return NULL;
}

static int parse(sq_worker_config_t *cfg, const char *const *env, int argc, const char **argv,
                 sq_error_t *err) {
  fake_env = env;
  return sq_worker_config_parse(cfg, argc, (char **)argv, env_get, err);
}

static void test_defaults(void) {
  sq_worker_config_t cfg;
  sq_error_t err;
  const char *argv[] = {"segq-worker"};
  CHECK_EQ_INT(parse(&cfg, NULL, 1, argv, &err), SQ_CONFIG_RUN);
  CHECK_STR(cfg.redis_url, "redis://127.0.0.1:6379");
  CHECK_STR(cfg.redis.nodes[0].host, "127.0.0.1");
  CHECK_EQ_INT(cfg.redis.nodes[0].port, 6379);
  CHECK(cfg.redis.password == NULL);
  CHECK_EQ_INT(cfg.redis.db, 0);
  CHECK_STR(cfg.prefix, "segq");
  CHECK_STR(cfg.models, "null,otsu");
  CHECK_EQ_INT(cfg.nmodels, 2);
  CHECK_STR(cfg.model_names[0], "null");
  CHECK_STR(cfg.model_names[1], "otsu");
  CHECK_STR(cfg.model_dir, "models");
  CHECK_EQ_INT(cfg.max_inflight_batches, 2);
  CHECK_EQ_INT(cfg.threads, 0);
  CHECK_EQ_INT(cfg.lease_ttl_ms, 10000);
  CHECK_EQ_INT(cfg.max_attempts, 3);
  CHECK_EQ_INT(cfg.result_ttl_s, 86400);
  CHECK_EQ_INT(cfg.drain_timeout_s, 30);
  CHECK_EQ_INT(cfg.wait_timeout_s, 2);
  CHECK_EQ_INT(cfg.max_batch, 0);
  CHECK_EQ_INT(cfg.max_delay_us, 0);
  CHECK_STR(cfg.log_level, "info");
  /* Defaults the worker shares with the scripts and the clients come from one source,
   * queue/scripts/schema.def: the option table must agree with it. */
  CHECK_EQ_INT(cfg.lease_ttl_ms, SQ_DEFAULT_LEASE_TTL_MS);
  CHECK_EQ_INT(cfg.max_attempts, SQ_DEFAULT_MAX_ATTEMPTS);
  CHECK_EQ_INT(cfg.result_ttl_s, SQ_DEFAULT_RESULT_TTL_S);
  CHECK_EQ_INT(cfg.dead_ttl_s, SQ_DEFAULT_DEAD_TTL_S);
  CHECK_EQ_INT(cfg.retry_base_ms, SQ_DEFAULT_RETRY_BASE_MS);
  CHECK_EQ_INT(cfg.retry_max_ms, SQ_DEFAULT_RETRY_MAX_MS);
  CHECK_EQ_INT(cfg.max_claim_bytes, SQ_DEFAULT_MAX_CLAIM_BYTES);
  CHECK_STR(cfg.device, "auto");
  /* <hostname>-<pid>-<random4>, in the id alphabet */
  CHECK(cfg.worker_id && strlen(cfg.worker_id) > 6);
  CHECK(cfg.worker_id && strspn(cfg.worker_id,
                                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                "0123456789._:-") == strlen(cfg.worker_id));
  sq_worker_config_free(&cfg);
}

static void test_precedence(void) {
  sq_worker_config_t cfg;
  sq_error_t err;
  const char *env[] = {"SEGQ_PREFIX",    "fromenv",     "SEGQ_LEASE_TTL_MS",
                       "3000",           "SEGQ_MODELS", "otsu",
                       "SEGQ_WORKER_ID", "envw",        NULL};
  const char *argv[] = {"w", "--prefix", "fromflag", "--max-attempts=7", "--threads", "4"};
  CHECK_EQ_INT(parse(&cfg, env, 6, argv, &err), SQ_CONFIG_RUN);
  CHECK_STR(cfg.prefix, "fromflag");    /* flag beats env */
  CHECK_EQ_INT(cfg.lease_ttl_ms, 3000); /* env beats default */
  CHECK_EQ_INT(cfg.max_attempts, 7);
  CHECK_EQ_INT(cfg.threads, 4);
  CHECK_STR(cfg.worker_id, "envw");
  CHECK_EQ_INT(cfg.nmodels, 1);
  CHECK_STR(cfg.model_names[0], "otsu");
  sq_worker_config_free(&cfg);

  /* A bad environment value is reported under the variable's name, even if a flag follows. */
  const char *env2[] = {"SEGQ_MAX_BATCH", "lots", NULL};
  const char *argv2[] = {"w"};
  CHECK(parse(&cfg, env2, 1, argv2, &err) == SQ_EINVAL);
  CHECK(strstr(err.msg, "SEGQ_MAX_BATCH") != NULL);
  sq_worker_config_free(&cfg);
}

static void test_redis_url(void) {
  sq_worker_config_t cfg;
  sq_error_t err;
  const char *argv[] = {"w", "--redis-url", "redis://:s3cret@redis.local:7000/5"};
  CHECK_EQ_INT(parse(&cfg, NULL, 3, argv, &err), SQ_CONFIG_RUN);
  CHECK_STR(cfg.redis.nodes[0].host, "redis.local");
  CHECK_EQ_INT(cfg.redis.nodes[0].port, 7000);
  CHECK_STR(cfg.redis.password, "s3cret");
  CHECK_EQ_INT(cfg.redis.db, 5);
  sq_worker_config_free(&cfg);

  const char *argv2[] = {"w", "--redis-url=redis://localhost"};
  CHECK_EQ_INT(parse(&cfg, NULL, 2, argv2, &err), SQ_CONFIG_RUN);
  CHECK_STR(cfg.redis.nodes[0].host, "localhost");
  CHECK_EQ_INT(cfg.redis.nodes[0].port, 6379);
  sq_worker_config_free(&cfg);

  const char *argv3[] = {"w", "--redis-url", "redis://user:pw@h:1/"};
  CHECK_EQ_INT(parse(&cfg, NULL, 3, argv3, &err), SQ_CONFIG_RUN);
  CHECK_STR(cfg.redis.password, "pw");
  CHECK_EQ_INT(cfg.redis.nodes[0].port, 1);
  sq_worker_config_free(&cfg);
}

/* The password: SEGQ_REDIS_PASSWORD (environment only) over the URL's, a password file over
 * both; never a flag; argv scrubbing masks it in place. */
static void test_password_sources(void) {
  sq_worker_config_t cfg;
  sq_error_t err;
  const char *argv[] = {"w", "--redis-url", "redis://alice:fromurl@h:1"};
  CHECK_EQ_INT(parse(&cfg, NULL, 3, argv, &err), SQ_CONFIG_RUN);
  CHECK_STR(cfg.redis.password, "fromurl");
  CHECK_STR(cfg.redis_password_source, "url");
  sq_worker_config_free(&cfg);
  const char *env[] = {"SEGQ_REDIS_PASSWORD", "fromenv", NULL};
  CHECK_EQ_INT(parse(&cfg, env, 3, argv, &err), SQ_CONFIG_RUN);
  CHECK_STR(cfg.redis.password, "fromenv");
  CHECK_STR(cfg.redis.user, "alice");
  CHECK_STR(cfg.redis_password_source, "env");
  char summary[1024];
  sq_worker_config_summary(&cfg, summary, sizeof summary);
  CHECK(strstr(summary, "auth=env") && !strstr(summary, "fromenv") && !strstr(summary, "fromurl"));
  sq_worker_config_free(&cfg);
  char path[] = "/tmp/segq-cfg-pw-XXXXXX";
  int fd = mkstemp(path);
  CHECK(fd >= 0 && write(fd, "fromfile\n", 9) == 9);
  close(fd);
  const char *argv2[] = {"w", "--redis-url", "redis://alice:fromurl@h:1", "--redis-password-file",
                         path};
  CHECK_EQ_INT(parse(&cfg, env, 5, argv2, &err), SQ_CONFIG_RUN);
  CHECK_STR(cfg.redis.password, "fromfile");
  CHECK_STR(cfg.redis_password_source, "file");
  sq_worker_config_free(&cfg);
  unlink(path);
  CHECK(parse(&cfg, env, 5, argv2, &err) == SQ_EINVAL);
  CHECK(strstr(err.msg, path) != NULL);
  sq_worker_config_free(&cfg);
  const char *argv3[] = {"w", "--redis-password", "x"};
  CHECK(parse(&cfg, NULL, 3, argv3, &err) == SQ_EINVAL);
  CHECK(strstr(err.msg, "SEGQ_REDIS_PASSWORD") != NULL);
  sq_worker_config_free(&cfg);
  char a1[] = "w", a2[] = "--redis-url", a3[] = "redis://u:abc@h",
       a4[] = "--redis-url=redis://:de@h";
  char *sv[] = {a1, a2, a3, a4};
  CHECK_EQ_INT(sq_worker_config_scrub_argv(4, sv), 2);
  CHECK_STR(a3, "redis://u:***@h");
  CHECK_STR(a4, "--redis-url=redis://:**@h");
}

static void expect_bad(const char *const *env, int argc, const char **argv, const char *needle) {
  sq_worker_config_t cfg;
  sq_error_t err = {0};
  int rc = parse(&cfg, env, argc, argv, &err);
  CHECK_EQ_INT(rc, SQ_EINVAL);
  if (!strstr(err.msg, needle)) {
    fprintf(stderr, "message \"%s\" does not mention \"%s\"\n", err.msg, needle);
    CHECK(0);
  }
  sq_worker_config_free(&cfg);
}

static void test_bad_values(void) {
  const char *a1[] = {"w", "--no-such-flag"};
  expect_bad(NULL, 2, a1, "no-such-flag");
  const char *a2[] = {"w", "--threads"};
  expect_bad(NULL, 2, a2, "needs a value");
  const char *a3[] = {"w", "--threads", "-1"};
  expect_bad(NULL, 3, a3, "--threads");
  const char *a4[] = {"w", "--lease-ttl-ms", "10"};
  expect_bad(NULL, 3, a4, "out of range");
  const char *a5[] = {"w", "--max-attempts", "99999999999999999999"};
  expect_bad(NULL, 3, a5, "--max-attempts");
  const char *a6[] = {"w", "--redis-url", "http://x:1"};
  expect_bad(NULL, 3, a6, "redis://");
  const char *a7[] = {"w", "--redis-url", "redis://h:99999"};
  expect_bad(NULL, 3, a7, "port");
  const char *a8[] = {"w", "--redis-url", "redis://h:1/x"};
  expect_bad(NULL, 3, a8, "database");
  const char *a9[] = {"w", "--models", "null,,otsu"};
  expect_bad(NULL, 3, a9, "models");
  const char *a10[] = {"w", "--models", "otsu,otsu"};
  expect_bad(NULL, 3, a10, "twice");
  const char *a11[] = {"w", "--worker-id", "bad id"};
  expect_bad(NULL, 3, a11, "worker-id");
  const char *a12[] = {"w", "--log-level", "chatty"};
  expect_bad(NULL, 3, a12, "log-level");
  const char *a12lf[] = {"w", "--log-format", "xml"};
  expect_bad(NULL, 3, a12lf, "log-format");
  const char *a12b[] = {"w", "--device", "gpu"};
  expect_bad(NULL, 3, a12b, "--device");
  const char *a12c[] = {"w", "--device", "cuda:x"};
  expect_bad(NULL, 3, a12c, "--device");
  const char *a12d[] = {"w", "--device", "cuda:"};
  expect_bad(NULL, 3, a12d, "--device");
  const char *a12e[] = {"w", "--precision", "fp64"};
  expect_bad(NULL, 3, a12e, "--precision");
  const char *a12f[] = {"w", "--streams", "65"};
  expect_bad(NULL, 3, a12f, "out of range");
  /* The one device grammar (gpu/onnx/backend.c), as the configuration checks it. */
  sq_error_t derr = {0};
  const char *good[] = {"auto", "cpu", "cuda", "cuda:1", "cuda:all", ""};
  for (size_t i = 0; i < sizeof good / sizeof *good; i++)
    CHECK_EQ_INT(sq_model_device_check(good[i], &derr), 0);
  const char *bad[] = {"cuda:", "gpu", "cuda:x", "fault:x"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
    CHECK_EQ_INT(sq_model_device_check(bad[i], &derr), SQ_EINVAL);
  const char *a13[] = {"w", "stray"};
  expect_bad(NULL, 2, a13, "stray");
  const char *a14[] = {"w", "--prefix", ""};
  expect_bad(NULL, 3, a14, "prefix");
  const char *a15[] = {"w", "--max-inflight-batches", "0"};
  expect_bad(NULL, 3, a15, "out of range");
}

static void test_actions(void) {
  sq_worker_config_t cfg;
  sq_error_t err;
  const char *a1[] = {"w", "--help"};
  CHECK_EQ_INT(parse(&cfg, NULL, 2, a1, &err), SQ_CONFIG_HELP);
  sq_worker_config_free(&cfg);
  const char *a2[] = {"w", "--help-markdown"};
  CHECK_EQ_INT(parse(&cfg, NULL, 2, a2, &err), SQ_CONFIG_HELP_MARKDOWN);
  sq_worker_config_free(&cfg);
  const char *a3[] = {"w", "--version"};
  CHECK_EQ_INT(parse(&cfg, NULL, 2, a3, &err), SQ_CONFIG_VERSION);
  sq_worker_config_free(&cfg);
  /* --check-models validates the rest like a run: the model list is split, a bad value fails. */
  const char *a4[] = {"w", "--check-models", "--models", "otsu,cellseg-unet", "--log-format=json"};
  CHECK_EQ_INT(parse(&cfg, NULL, 5, a4, &err), SQ_CONFIG_CHECK_MODELS);
  CHECK_EQ_INT(cfg.nmodels, 2);
  CHECK_STR(cfg.log_format, "json");
  sq_worker_config_free(&cfg);
  const char *a5[] = {"w", "--check-models", "--models", "a,,b"};
  CHECK_EQ_INT(parse(&cfg, NULL, 4, a5, &err), SQ_EINVAL);
  sq_worker_config_free(&cfg);
  /* The markdown table has one row per option, generated from the same table. */
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  sq_worker_config_print_markdown(f);
  fclose(f);
  CHECK(strstr(buf, "| `--redis-url` | `SEGQ_REDIS_URL` |") != NULL);
  CHECK(strstr(buf, "`--drain-timeout-s`") != NULL);
  /* docs/operations.md carries exactly this table (regenerate it with --help-markdown). */
  const char *dir = getenv("SEGQ_SOURCE_DIR");
  if (dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/docs/operations.md", dir);
    FILE *doc = fopen(path, "rb");
    CHECK(doc != NULL);
    if (doc) {
      static char text[1 << 17];
      size_t n = fread(text, 1, sizeof text - 1, doc);
      text[n] = '\0';
      fclose(doc);
      if (!strstr(text, buf))
        fprintf(stderr, "docs/operations.md: the options table differs from --help-markdown\n");
      CHECK(strstr(text, buf) != NULL);
    }
  }
  free(buf);
}

/* main() re-executes for OpenMP's wait policy only when a model may run on the CPU backend: a
 * worker of built-ins skips that second start-up; anything unclear keeps it. */
static void test_uses_openmp(void) {
  if (getenv("SEGQ_MODELS")) unsetenv("SEGQ_MODELS");
  const char *builtins[] = {"segq-worker", "--models", "null,otsu"};
  CHECK(sq_worker_uses_openmp(3, (char **)builtins) == 0);
  const char *dflt[] = {"segq-worker"}; /* the default models: null,otsu */
  CHECK(sq_worker_uses_openmp(1, (char **)dflt) == 0);
  const char *repo[] = {"segq-worker", "--models", "null,cellseg-unet"};
  CHECK(sq_worker_uses_openmp(3, (char **)repo) == 1);
  const char *bad[] = {"segq-worker", "--models", "null", "--no-such-flag"};
  CHECK(sq_worker_uses_openmp(4, (char **)bad) == 1);
  const char *help[] = {"segq-worker", "--help"};
  CHECK(sq_worker_uses_openmp(2, (char **)help) == 1);
  CHECK(sq_model_is_builtin("null") && sq_model_is_builtin("otsu"));
  CHECK(!sq_model_is_builtin("cellseg-unet") && !sq_model_is_builtin(""));
}

int main(void) {
  test_uses_openmp();
  test_defaults();
  test_precedence();
  test_redis_url();
  test_password_sources();
  test_bad_values();
  test_actions();
  CHECK_DONE();
}
