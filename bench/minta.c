/* minta: the smallest transport agent that speaks the scheduler <-> TA protocol
 * (MQ2-REF section 13), for bench/vs_zmailer.py. Both schedulers under test run this
 * same binary, so a dispatch figure measures the scheduler and not its agent.
 *
 * Reads job lines "<spool path>\t<host>\n" (or "<spool path>\n") on stdin, relative
 * to its cwd (the postoffice's transport/ folder, where both schedulers start it); opens the
 * control file, and for every recipient line "r" with status ' ' whose host equals
 * the job's host (ASCII case-insensitive) marks it done ('+' at offset + 1, no fsync)
 * and reports "<id>/<offset>\t\tok\n". Then "#hungry\n". It reads whatever jobs are
 * waiting and answers them with one write, as any agent that buffers its stdout does.
 * An empty line or EOF ends it. "#idle" is answered "#hungry". No locks, no d lines:
 * With argv[1] = a file, its first report appends "<CLOCK_MONOTONIC seconds>\n" there
 * (once per process), so the runner knows when the first delivery happened.
 * this is a benchmark instrument, not a delivery agent.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static char out[1 << 16];
static size_t outlen;
static const char *stamp = NULL;

static void flush_out(void)
{
    size_t done = 0;
    while (done < outlen) {
        ssize_t n = write(1, out + done, outlen - done);
        if (n <= 0)
            exit(1);
        done += (size_t)n;
    }
    outlen = 0;
}

static void emit(const char *s, size_t n)
{
    if (outlen + n > sizeof out)
        flush_out();
    memcpy(out + outlen, s, n);
    outlen += n;
}

static void stamp_first(void)
{
    struct timespec ts;
    char line[64];
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int n = snprintf(line, sizeof line, "%ld.%09ld\n", (long)ts.tv_sec, ts.tv_nsec);
    int fd = open(stamp, O_WRONLY | O_APPEND | O_CREAT, 0644);
    if (fd >= 0) {
        if (write(fd, line, (size_t)n) < 0)
            n = 0;
        close(fd);
    }
    stamp = NULL;
}

/* The field that starts at p (fields are separated by one space). */
static const char *field_end(const char *p, const char *end)
{
    while (p < end && *p != ' ' && *p != '\n')
        p++;
    return p;
}

static void job(char *path, const char *host)
{
    const char *name = strrchr(path, '/');
    long id = atol(name ? name + 1 : path);
    int fd = open(path, O_RDWR);
    if (fd < 0) {
        emit("#resync ", 8);
        emit(path, strlen(path));
        emit("\n", 1);
        return;
    }
    struct stat st;
    char *buf = NULL;
    ssize_t size = 0;
    if (fstat(fd, &st) == 0 && st.st_size > 0) {
        buf = malloc((size_t)st.st_size);
        size = buf ? pread(fd, buf, (size_t)st.st_size, 0) : -1;
    }
    size_t hostlen = strlen(host);
    const char *end = buf + (size > 0 ? size : 0);
    const char *p = buf;
    while (p && p < end) {
        const char *line = p;
        if ((*p == 'm' || *p == 'M') && p + 1 < end && p[1] == '\n') {
            const char *stop = memmem(p, (size_t)(end - p), "\n\n", 2);
            p = stop ? stop + 2 : end;
            continue;
        }
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        p = nl ? nl + 1 : end;
        if (*line != 'r' || line + 12 > end || line[1] != ' ')
            continue;
        const char *chan = line + 12;
        const char *h = field_end(chan, end) + 1;
        const char *hend = field_end(h, end);
        if (hostlen && ((size_t)(hend - h) != hostlen || strncasecmp(h, host, hostlen)))
            continue;
        long off = (long)(line - buf);
        if (pwrite(fd, "+", 1, off + 1) != 1)
            continue;
        char rep[64];
        int n = snprintf(rep, sizeof rep, "%ld/%ld\t\tok\n", id, off);
        emit(rep, (size_t)n);
        if (stamp)
            stamp_first();
    }
    free(buf);
    close(fd);
}

int main(int argc, char **argv)
{
    static char in[1 << 16];
    size_t have = 0;
    if (argc > 1)
        stamp = argv[1];
    emit("#hungry\n", 8);
    flush_out();
    for (;;) {
        ssize_t n = read(0, in + have, sizeof in - have);
        if (n <= 0)
            return 0;
        have += (size_t)n;
        char *p = in, *nl;
        while ((nl = memchr(p, '\n', have - (size_t)(p - in))) != NULL) {
            *nl = '\0';
            if (*p == '\0') {
                flush_out();
                return 0;
            }
            if (strcmp(p, "#idle") != 0) {
                char *tab = strchr(p, '\t');
                if (tab)
                    *tab++ = '\0';
                job(p, tab ? tab : "");
            }
            emit("#hungry\n", 8);
            p = nl + 1;
        }
        have -= (size_t)(p - in);
        memmove(in, p, have);
        flush_out();
    }
}
