/* Preloaded into a program run under valgrind (ci/profile/submits.sh):
 * crew starts its workers (and fork server) with posix_spawn of
 * /proc/self/exe, which under valgrind names valgrind's own tool, not the
 * program. readlink of /proc/self/exe, which valgrind answers with the
 * program's path, gives the path to spawn instead, so that valgrind
 * (--trace-children=yes) follows the workers too. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <spawn.h>
#include <string.h>
#include <unistd.h>

typedef int (*spawn_fn)(pid_t *, const char *, const posix_spawn_file_actions_t *,
                        const posix_spawnattr_t *, char *const[], char *const[]);

int posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *actions,
                const posix_spawnattr_t *attr, char *const argv[], char *const envp[]) {
    static spawn_fn real;
    char exe[4096];
    if (!real) {
        real = (spawn_fn)dlsym(RTLD_NEXT, "posix_spawn");
    }
    if (strcmp(path, "/proc/self/exe") == 0) {
        ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
        if (n > 0) {
            exe[n] = '\0';
            path = exe;
        }
    }
    return real(pid, path, actions, attr, argv, envp);
}
