/* worker/check: `segq-worker --check-models`, the model repository validated the way the worker
 * would open it at start-up, but without Redis and without stopping at the first problem, so a
 * deployment (an image build, a CI job, a ConfigMap change) can refuse a bad repository before
 * any worker runs it.
 * Threads: main thread, instead of the loop. */
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "gpu/gpu.h"
#include "worker/worker.h"

typedef struct {
  FILE *out;
  const char *name;
  unsigned problems;
} report_t;

static void on_problem(const char *problem, void *data) {
  report_t *r = data;
  fprintf(r->out, "  problem: %s\n", problem);
  r->problems++;
}

static int name_cmp(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The folders of dir (not hidden), sorted; NULL and *n = 0 when dir cannot be read. */
static char **list_folders(const char *dir, size_t *n) {
  *n = 0;
  DIR *d = opendir(dir);
  if (!d) return NULL;
  char **names = NULL;
  size_t cap = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.') continue;
    char path[4096];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) continue;
    if (*n == cap) {
      cap = cap ? 2 * cap : 16;
      char **grown = realloc(names, cap * sizeof(char *));
      if (!grown) break;
      names = grown;
    }
    if (!(names[*n] = sq_strdup(e->d_name))) break;
    (*n)++;
  }
  closedir(d);
  qsort(names, *n, sizeof(char *), name_cmp);
  return names;
}

int sq_worker_check_models(const sq_worker_config_t *cfg, FILE *out) {
  size_t nfolders = 0;
  char **folders = list_folders(cfg->model_dir, &nfolders);
  struct stat st;
  int repo_ok = stat(cfg->model_dir, &st) == 0 && S_ISDIR(st.st_mode);
  if (repo_ok)
    fprintf(out, "model repository %s\n", cfg->model_dir);
  else
    fprintf(out, "model repository %s: not a readable directory\n", cfg->model_dir);
  /* --models first (what this configuration would serve), then the rest of the repository. */
  size_t total = cfg->nmodels + nfolders, valid = 0;
  const char **names = calloc(total ? total : 1, sizeof(char *));
  if (!names) {
    fprintf(out, "out of memory\n");
    return 1;
  }
  size_t n = 0;
  for (size_t i = 0; i < cfg->nmodels; i++) names[n++] = cfg->model_names[i];
  for (size_t i = 0; i < nfolders; i++) {
    int dup = 0;
    for (size_t k = 0; k < cfg->nmodels && !dup; k++)
      dup = !strcmp(cfg->model_names[k], folders[i]);
    if (!dup) names[n++] = folders[i];
  }
  for (size_t i = 0; i < n; i++) {
    report_t r = {out, names[i], 0};
    sq_error_t err = {0};
    fprintf(out, "%s:\n", names[i]);
    int rc = sq_model_check(names[i], cfg->model_dir, on_problem, &r, &err);
    if (rc && r.problems == 0) on_problem(err.msg, &r); /* never a failure without a reason */
    fprintf(out, "  %s\n", rc ? "INVALID" : "ok");
    valid += rc == 0;
  }
  fprintf(out, "%zu of %zu models valid\n", valid, n);
  for (size_t i = 0; i < nfolders; i++) free(folders[i]);
  free(folders);
  free(names);
  return repo_ok && valid == n ? 0 : 1;
}
