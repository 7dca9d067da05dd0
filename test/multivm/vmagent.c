// vmagent: the one program the inner guests of the multi-VM suite run besides
// busybox (test/multivm/). Built static by the harness: under TCG inside TCG a
// dynamic binary spends tens of seconds in the loader and Node needs minutes,
// while this starts at once.
//
//   /init (as PID 1)                      mounts /proc /sys /dev /tmp /run, loads the modules in /lib/mod/order,
//                                         names the host from the kernel command line, then serves control
//                                         on CONTROL_PORT and says INNER_READY on the console (no shell, no
//                                         insmod: every exec costs seconds under TCG inside TCG)
//   vmagent control PORT                  one shell command per vsock connection (protocol below)
//   vmagent listen PORT echo|sink [LOG]   a vsock server, one process per connection; LOG gets a line per connection
//                                         and LOG.<peer_cid>-<peer_port>.head its first HEAD bytes (what a relay wrote
//                                         first); a sink answers "received N sha256 HEX" after the sender's EOF
//   vmagent connect CID PORT [--timeout-ms N] [--send FILE]... [--pattern BYTES SEED] [--sha256]
//                                         sends the files, then the pattern (or stdin), half-closes, reads to EOF;
//                                         received bytes go to stdout unless --sha256 (then only their hash)
//   vmagent bench-connect CID PORT COUNT [--send FILE]...
//                                         COUNT times: connect, send the files and one byte, half-close, read to EOF
//   vmagent cid                           the local CID (IOCTL_VM_SOCKETS_GET_LOCAL_CID)
//
// connect and bench-connect end with one line on stderr, "vmagent-result k=v ...",
// which the tests read (result=ok|error, error=ERRNO_NAME, phase, sent, received, ms).
//
// Control protocol: the client sends a u32 (big-endian) script length, the script,
// then the command's stdin, and half-closes. The agent runs `/bin/sh -c script`
// and answers with frames: u8 kind (1 stdout, 2 stderr, 3 exit), u32 length,
// payload; the exit frame's payload is the status as a u32 (128 + signal when killed).
// Background jobs must redirect their output: the answer ends when the shell exits.

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/vm_sockets.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BUF (64 * 1024)
/** Enough for a relay's source assertion (about 2 KiB) and the PROXY v2 header after it. */
#define HEAD (8 * 1024)

#if !defined(INNER_CMDLINE_MARK) || !defined(INNER_SAY) || !defined(INNER_READY) || !defined(CONTROL_PORT)
#error "build with -DINNER_CMDLINE_MARK=... -DINNER_SAY=... -DINNER_READY=... -DCONTROL_PORT=... (test/multivm/inner-image.mjs does)"
#endif

static const char *errname(int e) {
  const char *n = strerrorname_np(e);
  return n ? n : "EUNKNOWN";
}

static void die(const char *what) {
  fprintf(stderr, "vmagent: %s: %s (%s)\n", what, strerror(errno), errname(errno));
  exit(3);
}

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int write_all(int fd, const void *data, size_t len) {
  const char *p = data;
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -1;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

static int read_all(int fd, void *data, size_t len) {
  char *p = data;
  while (len > 0) {
    ssize_t n = read(fd, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

static unsigned long number(const char *text, const char *what) {
  char *end;
  errno = 0;
  unsigned long v = strtoul(text, &end, 10);
  if (errno || *text == '\0' || *end != '\0') {
    fprintf(stderr, "vmagent: %s must be a number, not \"%s\"\n", what, text);
    exit(3);
  }
  return v;
}

// ---------------------------------------------------------------- SHA-256 (FIPS 180-4)

typedef struct {
  uint32_t h[8];
  uint64_t bytes;
  unsigned char block[64];
  size_t fill;
} sha256_ctx;

static const uint32_t K256[64] = {
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be,
  0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa,
  0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85,
  0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3,
  0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f,
  0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_block(sha256_ctx *c, const unsigned char *p) {
  uint32_t w[64], s[8];
  for (int i = 0; i < 16; i++) w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
  for (int i = 16; i < 64; i++) {
    uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
    uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
    w[i] = w[i - 16] + s0 + w[i - 7] + s1;
  }
  memcpy(s, c->h, sizeof s);
  for (int i = 0; i < 64; i++) {
    uint32_t t1 = s[7] + (ROR(s[4], 6) ^ ROR(s[4], 11) ^ ROR(s[4], 25)) + ((s[4] & s[5]) ^ (~s[4] & s[6])) + K256[i] + w[i];
    uint32_t t2 = (ROR(s[0], 2) ^ ROR(s[0], 13) ^ ROR(s[0], 22)) + ((s[0] & s[1]) ^ (s[0] & s[2]) ^ (s[1] & s[2]));
    memmove(s + 1, s, 7 * sizeof s[0]);
    s[4] += t1;
    s[0] = t1 + t2;
  }
  for (int i = 0; i < 8; i++) c->h[i] += s[i];
}

static void sha256_init(sha256_ctx *c) {
  static const uint32_t iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  memcpy(c->h, iv, sizeof iv);
  c->bytes = 0;
  c->fill = 0;
}

static void sha256_update(sha256_ctx *c, const unsigned char *p, size_t n) {
  c->bytes += n;
  while (n > 0) {
    size_t take = 64 - c->fill < n ? 64 - c->fill : n;
    memcpy(c->block + c->fill, p, take);
    c->fill += take;
    p += take;
    n -= take;
    if (c->fill == 64) {
      sha256_block(c, c->block);
      c->fill = 0;
    }
  }
}

static void sha256_hex(sha256_ctx *c, char out[65]) {
  uint64_t bits = c->bytes * 8;
  unsigned char pad = 0x80, zero = 0, len[8];
  sha256_update(c, &pad, 1);
  while (c->fill != 56) sha256_update(c, &zero, 1);
  for (int i = 0; i < 8; i++) len[i] = (unsigned char)(bits >> (56 - 8 * i));
  sha256_update(c, len, 8);
  for (int i = 0; i < 8; i++) sprintf(out + 8 * i, "%08x", c->h[i]);
}

// ---------------------------------------------------------------- vsock

static int vsock_listen(unsigned port) {
  int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) die("socket(AF_VSOCK)");
  struct sockaddr_vm addr = {.svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY, .svm_port = port};
  if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0) die("bind");
  if (listen(fd, 128) < 0) die("listen");
  return fd;
}

/** A connected vsock socket, or -1 with errno set. */
static int vsock_connect(unsigned cid, unsigned port, unsigned long timeout_ms) {
  int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (timeout_ms > 0) {
    struct timeval tv = {.tv_sec = (time_t)(timeout_ms / 1000), .tv_usec = (suseconds_t)(timeout_ms % 1000) * 1000};
    setsockopt(fd, AF_VSOCK, SO_VM_SOCKETS_CONNECT_TIMEOUT, &tv, sizeof tv);
  }
  struct sockaddr_vm addr = {.svm_family = AF_VSOCK, .svm_cid = cid, .svm_port = port};
  if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
    int e = errno;
    close(fd);
    errno = e;
    return -1;
  }
  return fd;
}

static unsigned local_cid(void) {
  int fd = open("/dev/vsock", O_RDONLY | O_CLOEXEC);
  if (fd < 0) die("open /dev/vsock");
  unsigned cid = 0;
  if (ioctl(fd, IOCTL_VM_SOCKETS_GET_LOCAL_CID, &cid) < 0) die("IOCTL_VM_SOCKETS_GET_LOCAL_CID");
  close(fd);
  return cid;
}

// ---------------------------------------------------------------- listen: echo | sink

/** The first bytes of a connection, for the test to read what came before the payload. */
static void write_head(const char *log, const struct sockaddr_vm *peer, const char *head, size_t len) {
  char path[512];
  snprintf(path, sizeof path, "%s.%u-%u.head", log, peer->svm_cid, peer->svm_port);
  int fd = open(path, O_WRONLY | O_TRUNC | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return;
  write_all(fd, head, len);
  close(fd);
}

static void serve_connection(int fd, const struct sockaddr_vm *peer, int sink, const char *log) {
  static char buf[BUF];
  static char head[HEAD];
  size_t head_len = 0;
  uint64_t in = 0, out = 0, t0 = now_ms();
  const char *end = "eof";
  sha256_ctx sha;
  sha256_init(&sha);
  int logfd = log ? open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644) : -1;
  char line[256];
  int n = snprintf(line, sizeof line, "accept peer_cid=%u peer_port=%u\n", peer->svm_cid, peer->svm_port);
  if (logfd >= 0) write_all(logfd, line, (size_t)n);
  for (;;) {
    ssize_t r = read(fd, buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      end = errname(errno);
      break;
    }
    if (r == 0) break;
    in += (uint64_t)r;
    if (head_len < HEAD) {
      size_t take = (size_t)r < HEAD - head_len ? (size_t)r : HEAD - head_len;
      memcpy(head + head_len, buf, take);
      head_len += take;
    }
    if (sink) sha256_update(&sha, (unsigned char *)buf, (size_t)r);
    else {
      if (write_all(fd, buf, (size_t)r) < 0) {
        end = errname(errno);
        break;
      }
      out += (uint64_t)r;
    }
  }
  if (sink && strcmp(end, "eof") == 0) {
    char hex[65];
    sha256_hex(&sha, hex);
    n = snprintf(line, sizeof line, "received %llu sha256 %s\n", (unsigned long long)in, hex);
    if (write_all(fd, line, (size_t)n) == 0) out += (uint64_t)n;
  }
  shutdown(fd, SHUT_WR);
  n = snprintf(line, sizeof line, "close peer_cid=%u peer_port=%u in=%llu out=%llu end=%s ms=%llu\n", peer->svm_cid, peer->svm_port,
               (unsigned long long)in, (unsigned long long)out, end, (unsigned long long)(now_ms() - t0));
  if (log) write_head(log, peer, head, head_len);
  if (logfd >= 0) write_all(logfd, line, (size_t)n);
  close(fd);
}

static int cmd_listen(unsigned port, int sink, const char *log) {
  int lfd = vsock_listen(port);
  signal(SIGCHLD, SIG_IGN);
  printf("vmagent: listening on vsock port %u (%s)\n", port, sink ? "sink" : "echo");
  fflush(stdout);
  for (;;) {
    struct sockaddr_vm peer;
    socklen_t len = sizeof peer;
    int fd = accept4(lfd, (struct sockaddr *)&peer, &len, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      die("accept");
    }
    pid_t pid = fork();
    if (pid == 0) {
      close(lfd);
      serve_connection(fd, &peer, sink, log);
      _exit(0);
    }
    close(fd);
  }
}

// ---------------------------------------------------------------- connect

struct sender {
  char **files;
  int nfiles;
  int file_index;
  int file_fd;
  int use_stdin;
  uint64_t pattern_left;
  uint32_t pattern_state;
};

/** Fills buf with the next bytes to send; 0 at the end. The pattern is xorshift32, 4 bytes little-endian per step. */
static ssize_t next_chunk(struct sender *s, unsigned char *buf, size_t cap) {
  while (s->file_index < s->nfiles) {
    if (s->file_fd < 0) {
      s->file_fd = open(s->files[s->file_index], O_RDONLY | O_CLOEXEC);
      if (s->file_fd < 0) die(s->files[s->file_index]);
    }
    ssize_t n = read(s->file_fd, buf, cap);
    if (n < 0) die("read file");
    if (n > 0) return n;
    close(s->file_fd);
    s->file_fd = -1;
    s->file_index++;
  }
  if (s->pattern_left > 0) {
    size_t n = s->pattern_left < cap ? (size_t)s->pattern_left : cap;
    n &= ~(size_t)3;
    if (n == 0) n = (size_t)s->pattern_left;
    for (size_t i = 0; i < n; i += 4) {
      uint32_t x = s->pattern_state;
      x ^= x << 13;
      x ^= x >> 17;
      x ^= x << 5;
      s->pattern_state = x;
      unsigned char word[4] = {(unsigned char)x, (unsigned char)(x >> 8), (unsigned char)(x >> 16), (unsigned char)(x >> 24)};
      memcpy(buf + i, word, n - i < 4 ? n - i : 4);
    }
    s->pattern_left -= n;
    return (ssize_t)n;
  }
  if (s->use_stdin) {
    ssize_t n;
    do n = read(0, buf, cap);
    while (n < 0 && errno == EINTR);
    if (n < 0) die("read stdin");
    return n;
  }
  return 0;
}

static void result(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void result(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("vmagent-result ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

/** The next bytes to send into out; at the end, half-closes fd and returns 0 (no longer sending). */
static int refill(struct sender *s, unsigned char *out, size_t cap, size_t *out_len, size_t *out_off, int fd) {
  ssize_t n = next_chunk(s, out, cap);
  if (n == 0) {
    shutdown(fd, SHUT_WR);
    return 0;
  }
  *out_len = (size_t)n;
  *out_off = 0;
  return 1;
}

static int cmd_connect(unsigned cid, unsigned port, unsigned long timeout_ms, struct sender *s, int hash) {
  static unsigned char out[BUF], in[BUF];
  uint64_t t0 = now_ms(), sent = 0, received = 0;
  int fd = vsock_connect(cid, port, timeout_ms);
  if (fd < 0) {
    result("result=error phase=connect error=%s cid=%u port=%u ms=%llu", errname(errno), cid, port, (unsigned long long)(now_ms() - t0));
    return 1;
  }
  uint64_t connect_ms = now_ms() - t0;
  sha256_ctx sha;
  sha256_init(&sha);
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  size_t out_len = 0, out_off = 0;
  int sending = 1, receiving = 1;
  const char *error = NULL, *phase = "";
  while (receiving) {
    // Stdin is read only when poll says so: a blocking read would leave what the far end sends unread meanwhile.
    int stdin_next = s->use_stdin && s->file_index >= s->nfiles && s->pattern_left == 0;
    if (sending && out_off == out_len && !stdin_next) sending = refill(s, out, sizeof out, &out_len, &out_off, fd);
    int await_stdin = sending && out_off == out_len && stdin_next;
    struct pollfd p[2] = {{.fd = fd, .events = POLLIN | (sending && !await_stdin ? POLLOUT : 0)}, {.fd = 0, .events = POLLIN}};
    if (poll(p, await_stdin ? 2 : 1, -1) < 0) {
      if (errno == EINTR) continue;
      die("poll");
    }
    if (await_stdin && (p[1].revents & (POLLIN | POLLHUP | POLLERR))) {
      sending = refill(s, out, sizeof out, &out_len, &out_off, fd);
      continue;
    }
    if (sending && !await_stdin && (p[0].revents & (POLLOUT | POLLERR | POLLHUP))) {
      ssize_t n = write(fd, out + out_off, out_len - out_off);
      if (n < 0 && errno != EAGAIN && errno != EINTR) {
        error = errname(errno);
        phase = "send";
        break;
      }
      if (n > 0) {
        out_off += (size_t)n;
        sent += (uint64_t)n;
      }
    }
    if (p[0].revents & (POLLIN | POLLERR | POLLHUP)) {
      ssize_t n = read(fd, in, sizeof in);
      if (n < 0 && errno != EAGAIN && errno != EINTR) {
        error = errname(errno);
        phase = "receive";
        break;
      }
      if (n == 0) {
        receiving = 0;
      } else if (n > 0) {
        received += (uint64_t)n;
        if (hash) sha256_update(&sha, in, (size_t)n);
        else if (write_all(1, in, (size_t)n) < 0) die("write stdout");
      }
    }
  }
  close(fd);
  uint64_t ms = now_ms() - t0;
  char hex[65] = "";
  if (hash) sha256_hex(&sha, hex);
  if (error) {
    result("result=error phase=%s error=%s cid=%u port=%u connect_ms=%llu sent=%llu received=%llu ms=%llu", phase, error, cid, port,
           (unsigned long long)connect_ms, (unsigned long long)sent, (unsigned long long)received, (unsigned long long)ms);
    return 2;
  }
  // EOF before everything was sent: the far end (or a relay) closed early.
  int complete = !sending;
  result("result=%s%s cid=%u port=%u connect_ms=%llu sent=%llu received=%llu ms=%llu%s%s", complete ? "ok" : "error",
         complete ? "" : " phase=send error=EOF", cid, port, (unsigned long long)connect_ms, (unsigned long long)sent, (unsigned long long)received,
         (unsigned long long)ms, hash ? " sha256=" : "", hex);
  return complete ? 0 : 2;
}

static int cmd_bench_connect(unsigned cid, unsigned port, unsigned long count, char **files, int nfiles) {
  uint64_t t0 = now_ms();
  unsigned long ok = 0;
  for (unsigned long i = 0; i < count; i++) {
    struct sender s = {.files = files, .nfiles = nfiles, .file_fd = -1, .pattern_left = 1, .pattern_state = 1};
    int saved = dup(2), devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
    dup2(devnull, 2);
    int rc = cmd_connect(cid, port, 0, &s, 1);
    dup2(saved, 2);
    close(saved);
    close(devnull);
    if (rc == 0) ok++;
  }
  uint64_t ms = now_ms() - t0;
  result("result=%s cid=%u port=%u count=%lu ok=%lu ms=%llu", ok == count ? "ok" : "error", cid, port, count, ok, (unsigned long long)ms);
  return ok == count ? 0 : 2;
}

// ---------------------------------------------------------------- control

static int frame(int fd, unsigned char kind, const void *data, uint32_t len) {
  unsigned char h[5] = {kind, (unsigned char)(len >> 24), (unsigned char)(len >> 16), (unsigned char)(len >> 8), (unsigned char)len};
  if (write_all(fd, h, sizeof h) < 0) return -1;
  return write_all(fd, data, len);
}

/** Copies what `from` has now into a frame; returns 0 at EOF, -1 when nothing is there yet. */
static int pump(int from, int sock, unsigned char kind) {
  static char buf[BUF];
  ssize_t n = read(from, buf, sizeof buf);
  if (n < 0) return errno == EAGAIN || errno == EINTR ? -1 : 0;
  if (n == 0) return 0;
  if (frame(sock, kind, buf, (uint32_t)n) < 0) exit(0);
  return 1;
}

static void run_command(int sock) {
  unsigned char lenbuf[4];
  if (read_all(sock, lenbuf, 4) < 0) return;
  uint32_t len = (uint32_t)lenbuf[0] << 24 | (uint32_t)lenbuf[1] << 16 | (uint32_t)lenbuf[2] << 8 | lenbuf[3];
  if (len > 1 << 20) return;
  char *script = malloc(len + 1);
  if (!script || read_all(sock, script, len) < 0) return;
  script[len] = '\0';
  int in[2], out[2], err[2];
  if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0) die("pipe");
  signal(SIGCHLD, SIG_DFL);
  signal(SIGPIPE, SIG_IGN);
  pid_t pid = fork();
  if (pid == 0) {
    setsid();
    signal(SIGPIPE, SIG_DFL);
    dup2(in[0], 0);
    dup2(out[1], 1);
    dup2(err[1], 2);
    execl("/bin/sh", "sh", "-c", script, (char *)NULL);
    _exit(127);
  }
  close(in[0]);
  close(out[1]);
  close(err[1]);
  fcntl(out[0], F_SETFL, O_NONBLOCK);
  fcntl(err[0], F_SETFL, O_NONBLOCK);
  int to_child = in[1], status = 0, exited = 0;
  static char buf[BUF];
  while (!exited) {
    struct pollfd p[3] = {{.fd = sock, .events = to_child >= 0 ? POLLIN : 0}, {.fd = out[0], .events = POLLIN}, {.fd = err[0], .events = POLLIN}};
    int ready = poll(p, 3, 100);
    if (ready < 0 && errno != EINTR) die("poll");
    if (to_child >= 0 && (p[0].revents & (POLLIN | POLLHUP | POLLERR))) {
      ssize_t n = read(sock, buf, sizeof buf);
      if (n > 0) {
        if (write_all(to_child, buf, (size_t)n) < 0) n = 0;
      }
      if (n <= 0) {
        close(to_child);
        to_child = -1;
      }
    }
    if (p[1].revents & (POLLIN | POLLHUP)) pump(out[0], sock, 1);
    if (p[2].revents & (POLLIN | POLLHUP)) pump(err[0], sock, 2);
    if (waitpid(pid, &status, WNOHANG) == pid) exited = 1;
  }
  // What the shell wrote before it exited is in the pipes; background jobs may keep them open.
  while (pump(out[0], sock, 1) > 0) {
  }
  while (pump(err[0], sock, 2) > 0) {
  }
  uint32_t code = WIFEXITED(status) ? (uint32_t)WEXITSTATUS(status) : 128 + (uint32_t)WTERMSIG(status);
  unsigned char c[4] = {(unsigned char)(code >> 24), (unsigned char)(code >> 16), (unsigned char)(code >> 8), (unsigned char)code};
  frame(sock, 3, c, 4);
  shutdown(sock, SHUT_WR);
}

static double uptime_s(void) {
  double up = -1;
  FILE *f = fopen("/proc/uptime", "r");
  if (f) {
    if (fscanf(f, "%lf", &up) != 1) up = -1;
    fclose(f);
  }
  return up;
}

static int cmd_control(unsigned port) {
  int lfd = vsock_listen(port);
  signal(SIGCHLD, SIG_IGN);
  printf(INNER_READY " at %.2f s: vmagent: control on vsock port %u, local cid %u\n", uptime_s(), port, local_cid());
  fflush(stdout);
  for (;;) {
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      die("accept");
    }
    pid_t pid = fork();
    if (pid == 0) {
      close(lfd);
      run_command(fd);
      _exit(0);
    }
    close(fd);
  }
}

// ---------------------------------------------------------------- init (PID 1)

static void require_inner_guest(void);

static void must_mount(const char *type, const char *target, unsigned long flags, const char *options) {
  if (mount(type, target, type, flags, options) < 0) {
    printf(INNER_SAY " FATAL mounting %s: %s\n", target, strerror(errno));
    fflush(stdout);
  }
}

/** The value of INNER_CMDLINE_MARK on the kernel command line (this guest's name). */
static void name_host(void) {
  char line[4096] = "";
  FILE *f = fopen("/proc/cmdline", "r");
  if (!f) return;
  if (!fgets(line, sizeof line, f)) line[0] = '\0';
  fclose(f);
  char *at = strstr(line, INNER_CMDLINE_MARK);
  if (!at) return;
  at += strlen(INNER_CMDLINE_MARK);
  size_t len = strcspn(at, " \n");
  if (sethostname(at, len) < 0) die("sethostname");
}

static void load_modules(const char *dir) {
  char order[256], path[512], name[256];
  snprintf(order, sizeof order, "%s/order", dir);
  FILE *f = fopen(order, "r");
  if (!f) die(order);
  while (fgets(name, sizeof name, f)) {
    name[strcspn(name, "\n")] = '\0';
    if (!name[0]) continue;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || (syscall(SYS_finit_module, fd, "", 0) < 0 && errno != EEXIST)) {
      printf(INNER_SAY " FATAL loading %s: %s\n", path, strerror(errno));
      fflush(stdout);
    }
    if (fd >= 0) close(fd);
  }
  fclose(f);
}

static int cmd_init(void) {
  must_mount("proc", "/proc", 0, NULL);
  must_mount("sysfs", "/sys", 0, NULL);
  must_mount("devtmpfs", "/dev", 0, NULL);
  must_mount("tmpfs", "/tmp", 0, "mode=1777");
  must_mount("tmpfs", "/run", 0, "mode=0755");
  require_inner_guest();
  setenv("PATH", "/bin", 1);
  printf(INNER_SAY " init at %.2f s\n", uptime_s());
  fflush(stdout);
  load_modules("/lib/mod");
  name_host();
  printf(INNER_SAY " modules at %.2f s\n", uptime_s());
  fflush(stdout);
  return cmd_control(CONTROL_PORT);
}

// ---------------------------------------------------------------- main

static void usage(void) {
  fputs("usage: vmagent control PORT | listen PORT echo|sink [LOG] | cid\n"
        "       vmagent connect CID PORT [--timeout-ms N] [--send FILE]... [--pattern BYTES SEED] [--sha256]\n"
        "       vmagent bench-connect CID PORT COUNT [--send FILE]...\n",
        stderr);
  exit(3);
}

/** Every command opens AF_VSOCK: refuse anywhere but an inner guest (its kernel command line carries the mark). */
static void require_inner_guest(void) {
  char line[4096] = "";
  FILE *f = fopen("/proc/cmdline", "r");
  if (f) {
    if (!fgets(line, sizeof line, f)) line[0] = '\0';
    fclose(f);
  }
  char *at = strstr(line, INNER_CMDLINE_MARK);
  if (!at || (at != line && at[-1] != ' ')) {
    fputs("vmagent: refusing to run outside an inner guest of the multi-VM suite (no " INNER_CMDLINE_MARK " on the kernel command line)\n", stderr);
    exit(3);
  }
}

int main(int argc, char **argv) {
  if (getpid() == 1) return cmd_init();
  if (argc < 2) usage();
  require_inner_guest();
  const char *cmd = argv[1];
  if (strcmp(cmd, "cid") == 0) {
    printf("%u\n", local_cid());
    return 0;
  }
  if (strcmp(cmd, "control") == 0 && argc == 3) return cmd_control((unsigned)number(argv[2], "PORT"));
  if (strcmp(cmd, "listen") == 0 && (argc == 4 || argc == 5)) {
    if (strcmp(argv[3], "echo") != 0 && strcmp(argv[3], "sink") != 0) usage();
    return cmd_listen((unsigned)number(argv[2], "PORT"), strcmp(argv[3], "sink") == 0, argc == 5 ? argv[4] : NULL);
  }
  if ((strcmp(cmd, "connect") == 0 && argc >= 4) || (strcmp(cmd, "bench-connect") == 0 && argc >= 5)) {
    int bench = cmd[0] == 'b';
    unsigned cid = (unsigned)number(argv[2], "CID"), port = (unsigned)number(argv[3], "PORT");
    unsigned long timeout_ms = 0, count = bench ? number(argv[4], "COUNT") : 0;
    char **files = calloc((size_t)argc, sizeof *files);
    struct sender s = {.files = files, .file_fd = -1, .use_stdin = 1};
    int hash = 0;
    for (int i = bench ? 5 : 4; i < argc; i++) {
      if (strcmp(argv[i], "--send") == 0 && i + 1 < argc) files[s.nfiles++] = argv[++i];
      else if (!bench && strcmp(argv[i], "--timeout-ms") == 0 && i + 1 < argc) timeout_ms = number(argv[++i], "--timeout-ms");
      else if (!bench && strcmp(argv[i], "--pattern") == 0 && i + 2 < argc) {
        s.pattern_left = number(argv[++i], "--pattern BYTES");
        s.pattern_state = (uint32_t)number(argv[++i], "--pattern SEED");
        if (s.pattern_state == 0) s.pattern_state = 1;
        s.use_stdin = 0;
      } else if (!bench && strcmp(argv[i], "--sha256") == 0) hash = 1;
      else usage();
    }
    signal(SIGPIPE, SIG_IGN);
    if (bench) return cmd_bench_connect(cid, port, count, files, s.nfiles);
    return cmd_connect(cid, port, timeout_ms, &s, hash);
  }
  usage();
  return 3;
}
