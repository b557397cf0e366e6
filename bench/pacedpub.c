/*
 * pacedpub: a paced MQTT 3.1.1 publisher for the tesaiot benchmarks.
 *
 * Publishes COUNT DPS368-like JSON messages (about 160 bytes, each carrying a sequence
 * number "seq") to one topic at a fixed RATE, over a raw TCP socket (no MQTT library),
 * and prints one JSON line with what it achieved. With -B BOOT the payload ends with
 * "boot": BOOT too, the pair tesaiot's sequence counter takes (simulate --sequence's tail).
 *
 * Pacing is absolute: message i is due at start + i / RATE on CLOCK_MONOTONIC, never
 * start + the sum of the gaps. Each wake-up sends every message that is due in one
 * send() (batching), then sleeps with clock_nanosleep(TIMER_ABSTIME) until the next one
 * is due. So a late wake-up costs latency, never rate. RATE 0 means as fast as possible.
 *
 * QoS 1: PUBACKs are drained without blocking between batches; packet ids cycle through
 * 1..65535 and at most 65535 are outstanding; at the end it waits (bounded) for all acks.
 * Every wait is bounded: no progress for STALL_S seconds ends the run with an error.
 *
 * Build: cc -O2 -o pacedpub pacedpub.c
 * Usage: pacedpub -p PORT -t TOPIC -r RATE -n COUNT [-H 127.0.0.1] [-q 0|1] [-d DEVICE]
 *                 [-i CLIENT_ID] [-W ACK_TIMEOUT_S] [-S FIRST_SEQ] [-B BOOT]
 * Exit: 0 all sent (and, QoS 1, acknowledged), 1 bad usage or connection, 2 stalled or
 * acks missing (the JSON line is printed anyway, with "error").
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_BATCH 1024          /* messages per send() at most */
#define FLAT_OUT_BATCH 256      /* messages per send() when RATE is 0 */
#define MAX_MSG 512             /* bytes of one PUBLISH packet at most */
#define MAX_OUTSTANDING 65535   /* QoS 1: unacknowledged packet ids at most */
#define STALL_S 10.0            /* no progress for this long: give up */

static int sock = -1;
static int qos = 0;
static uint64_t acked = 0;
static unsigned char rbuf[65536];
static size_t rlen = 0;
static const char *error_text = NULL;
static long long boot = -1;  /* -B: append "boot" after "seq" */

static int64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int64_t real_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void sleep_until(int64_t t_ns) {
    struct timespec ts = {.tv_sec = t_ns / 1000000000LL, .tv_nsec = t_ns % 1000000000LL};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

/* Parse what the broker sent: count PUBACKs, skip anything else. */
static void parse_incoming(void) {
    size_t pos = 0;
    while (pos + 2 <= rlen) {
        size_t len = 0, mult = 1, i = pos + 1;
        int complete = 0;
        while (i < rlen && i < pos + 5) {
            len += (size_t)(rbuf[i] & 0x7f) * mult;
            mult *= 128;
            if (!(rbuf[i++] & 0x80)) {
                complete = 1;
                break;
            }
        }
        if (!complete || i + len > rlen) break;
        if ((rbuf[pos] & 0xf0) == 0x40) acked++;
        pos = i + len;
    }
    memmove(rbuf, rbuf + pos, rlen - pos);
    rlen -= pos;
}

/* Read whatever is waiting, without blocking. Returns -1 when the broker closed. */
static int drain(void) {
    for (;;) {
        ssize_t n = recv(sock, rbuf + rlen, sizeof rbuf - rlen, MSG_DONTWAIT);
        if (n > 0) {
            rlen += (size_t)n;
            parse_incoming();
            continue;
        }
        if (n == 0) return -1;
        if (errno == EINTR) continue;
        return 0;
    }
}

/* Send all of buf; while the socket is full, wait for room and keep draining acks. */
static int send_all(const unsigned char *buf, size_t len) {
    int64_t last_progress = mono_ns();
    while (len > 0) {
        ssize_t n = send(sock, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            buf += n;
            len -= (size_t)n;
            last_progress = mono_ns();
            continue;
        }
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            error_text = "send failed (broker closed the connection?)";
            return -1;
        }
        struct pollfd p = {.fd = sock, .events = POLLOUT | POLLIN};
        poll(&p, 1, 100);
        if ((p.revents & POLLIN) && drain() < 0) {
            error_text = "the broker closed the connection";
            return -1;
        }
        if ((mono_ns() - last_progress) / 1e9 > STALL_S) {
            error_text = "stalled: the broker took nothing for 10 s";
            return -1;
        }
    }
    return 0;
}

static size_t put_str(unsigned char *p, const char *s, size_t n) {
    p[0] = (unsigned char)(n >> 8);
    p[1] = (unsigned char)(n & 0xff);
    memcpy(p + 2, s, n);
    return n + 2;
}

static size_t put_varint(unsigned char *p, size_t v) {
    size_t i = 0;
    do {
        unsigned char b = v % 128;
        v /= 128;
        if (v) b |= 0x80;
        p[i++] = b;
    } while (v);
    return i;
}

static char *put_uint(char *p, uint64_t v) {
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n) *p++ = tmp[--n];
    return p;
}

/* A value with two decimals from an integer count of hundredths. */
static char *put_centi(char *p, uint32_t centi) {
    p = put_uint(p, centi / 100);
    *p++ = '.';
    *p++ = (char)('0' + (centi / 10) % 10);
    *p++ = (char)('0' + centi % 10);
    return p;
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;
static uint64_t rng(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* The DPS368 payload (upstream key order) plus "seq", timestamped at its due time. */
static size_t make_payload(char *out, int64_t due_real_ns, const char *device, uint64_t seq) {
    static time_t cached_sec = -1;
    static char cached_prefix[32];
    time_t sec = (time_t)(due_real_ns / 1000000000LL);
    if (sec != cached_sec) {
        struct tm tm;
        gmtime_r(&sec, &tm);
        strftime(cached_prefix, sizeof cached_prefix, "%Y-%m-%dT%H:%M:%S", &tm);
        cached_sec = sec;
    }
    char *p = out;
    p += sprintf(p, "{\"timestamp\": \"%s.%06ld+00:00\", \"device_id\": \"%s\", \"sensor_type\": \"DPS368\", "
                    "\"data\": {\"pressure\": ",
                 cached_prefix, (long)((due_real_ns % 1000000000LL) / 1000), device);
    p = put_centi(p, 95000 + (uint32_t)(rng() % 10001));
    memcpy(p, ", \"temperature\": ", 17);
    p += 17;
    p = put_centi(p, 2000 + (uint32_t)(rng() % 1501));
    memcpy(p, "}, \"seq\": ", 10);
    p += 10;
    p = put_uint(p, seq);
    if (boot >= 0) {
        memcpy(p, ", \"boot\": ", 10);
        p += 10;
        p = put_uint(p, (uint64_t)boot);
    }
    *p++ = '}';
    return (size_t)(p - out);
}

static void usage(void) {
    fprintf(stderr, "usage: pacedpub -p PORT -t TOPIC -r RATE -n COUNT [-H HOST] [-q 0|1] [-d DEVICE] "
                    "[-i CLIENT_ID] [-W ACK_TIMEOUT_S] [-S FIRST_SEQ] [-B BOOT]\n");
    exit(1);
}

static int connect_broker(const char *host, int port, const char *client_id) {
    sock = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (sock < 0 || inet_pton(AF_INET, host, &addr.sin_addr) != 1) return -1;
    int one = 1;
    setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(sock, (struct sockaddr *)&addr, sizeof addr) < 0) return -1;
    unsigned char pkt[300], body[280];
    size_t b = 0;
    b += put_str(body + b, "MQTT", 4);
    body[b++] = 4;      /* protocol level 3.1.1 */
    body[b++] = 0x02;   /* clean session */
    body[b++] = 0;      /* keepalive 0: runs are short and we never idle */
    body[b++] = 0;
    size_t idlen = strlen(client_id);
    if (idlen > 200) idlen = 200;
    b += put_str(body + b, client_id, idlen);
    size_t n = 0;
    pkt[n++] = 0x10;
    n += put_varint(pkt + n, b);
    memcpy(pkt + n, body, b);
    n += b;
    if (send(sock, pkt, n, MSG_NOSIGNAL) != (ssize_t)n) return -1;
    unsigned char ack[4];
    size_t got = 0;
    while (got < 4) {
        struct pollfd p = {.fd = sock, .events = POLLIN};
        if (poll(&p, 1, 5000) <= 0) return -1;
        ssize_t r = recv(sock, ack + got, 4 - got, 0);
        if (r <= 0) return -1;
        got += (size_t)r;
    }
    if (ack[0] != 0x20 || ack[3] != 0) return -1;
    return 0;
}

int main(int argc, char **argv) {
    const char *host = "127.0.0.1", *topic = NULL, *device = "bench-01", *client_id = NULL;
    int port = 0, opt;
    double rate = -1, ack_timeout = 30;
    long long count = -1, first_seq = 0;
    while ((opt = getopt(argc, argv, "H:p:t:r:n:q:d:i:W:S:B:")) != -1) {
        switch (opt) {
        case 'H': host = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 't': topic = optarg; break;
        case 'r': rate = atof(optarg); break;
        case 'n': count = atoll(optarg); break;
        case 'q': qos = atoi(optarg); break;
        case 'd': device = optarg; break;
        case 'i': client_id = optarg; break;
        case 'W': ack_timeout = atof(optarg); break;
        case 'S': first_seq = atoll(optarg); break;
        case 'B': boot = atoll(optarg); break;
        default: usage();
        }
    }
    if (!port || !topic || rate < 0 || count < 0 || (qos != 0 && qos != 1) || strlen(topic) > 200 ||
        strlen(device) > 64)
        usage();
    char idbuf[64];
    if (!client_id) {
        snprintf(idbuf, sizeof idbuf, "pacedpub-%d", (int)getpid());
        client_id = idbuf;
    }
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);  /* wake up on time, not up to 50 us late */
    if (connect_broker(host, port, client_id) < 0) {
        printf("{\"error\": \"cannot connect to %s:%d\"}\n", host, port);
        return 1;
    }

    static unsigned char batch[MAX_BATCH * MAX_MSG];
    char payload[400];
    size_t topic_len = strlen(topic);
    uint64_t sent = 0, late_over_1ms = 0, batches = 0, packet_id = 0;
    double late_sum_ns = 0, late_max_ns = 0;
    const uint64_t n_total = (uint64_t)count;
    const double gap_ns = rate > 0 ? 1e9 / rate : 0;
    const int64_t start = mono_ns() + 1000000;  /* first message due in 1 ms */
    const int64_t real_start = real_ns() + (start - mono_ns());
    int64_t last_send_done = start;
    int failed = 0;
    int64_t ids_wait_start = 0;
    sleep_until(start);
    while (sent < n_total && !failed) {
        int64_t now = mono_ns();
        uint64_t due_count;
        if (rate > 0) {
            double elapsed = (double)(now - start);
            due_count = elapsed < 0 ? 0 : (uint64_t)(elapsed / gap_ns) + 1;
            if (due_count > n_total) due_count = n_total;
            if (due_count <= sent) {
                sleep_until(start + (int64_t)((double)sent * gap_ns));
                continue;
            }
        } else {
            due_count = sent + FLAT_OUT_BATCH;
            if (due_count > n_total) due_count = n_total;
        }
        uint64_t upto = due_count;
        if (upto > sent + MAX_BATCH) upto = sent + MAX_BATCH;
        if (qos == 1) {
            uint64_t room = MAX_OUTSTANDING - (sent - acked);
            if (upto > sent + room) upto = sent + room;
            if (upto == sent) {  /* all packet ids in use: wait for acks */
                if (!ids_wait_start) ids_wait_start = now;
                struct pollfd p = {.fd = sock, .events = POLLIN};
                poll(&p, 1, 100);
                if (drain() < 0) {
                    error_text = "the broker closed the connection";
                    failed = 1;
                } else if ((mono_ns() - ids_wait_start) / 1e9 > STALL_S) {
                    error_text = "stalled: no PUBACK for 10 s";
                    failed = 1;
                }
                continue;
            }
            ids_wait_start = 0;
        }
        size_t blen = 0;
        for (uint64_t i = sent; i < upto; i++) {
            int64_t due_off = (int64_t)((double)i * gap_ns);
            size_t plen = make_payload(payload, real_start + due_off, device, (uint64_t)first_seq + i);
            unsigned char *p = batch + blen;
            size_t remaining = 2 + topic_len + plen + (qos ? 2 : 0), n = 0;
            p[n++] = qos ? 0x32 : 0x30;
            n += put_varint(p + n, remaining);
            n += put_str(p + n, topic, topic_len);
            if (qos) {
                packet_id = packet_id % 65535 + 1;
                p[n++] = (unsigned char)(packet_id >> 8);
                p[n++] = (unsigned char)(packet_id & 0xff);
            }
            memcpy(p + n, payload, plen);
            blen += n + plen;
        }
        if (send_all(batch, blen) < 0) {
            failed = 1;
            break;
        }
        int64_t done = mono_ns();
        for (uint64_t i = sent; i < upto; i++) {
            double late = (double)(done - start) - (double)i * gap_ns;
            if (late < 0) late = 0;
            late_sum_ns += late;
            if (late > late_max_ns) late_max_ns = late;
            if (late > 1e6) late_over_1ms++;
        }
        last_send_done = done;
        sent = upto;
        batches++;
        if (qos == 1 && drain() < 0) {
            error_text = "the broker closed the connection";
            failed = 1;
        }
    }
    const int64_t end = last_send_done;
    int64_t ack_deadline = mono_ns() + (int64_t)(ack_timeout * 1e9);
    while (!failed && qos == 1 && acked < sent && mono_ns() < ack_deadline) {
        struct pollfd p = {.fd = sock, .events = POLLIN};
        poll(&p, 1, 50);
        if (drain() < 0) break;
    }
    const int64_t acks_done = mono_ns();
    /* DISCONNECT, then wait for the broker to close: it has then handled every PUBLISH. */
    unsigned char disconnect[2] = {0xe0, 0x00};
    send(sock, disconnect, 2, MSG_NOSIGNAL);
    shutdown(sock, SHUT_WR);
    int64_t close_deadline = mono_ns() + 5000000000LL;
    while (mono_ns() < close_deadline) {
        struct pollfd p = {.fd = sock, .events = POLLIN};
        poll(&p, 1, 50);
        if (drain() < 0) break;
    }
    const int64_t closed = mono_ns();
    close(sock);

    double elapsed_s = (double)(end - start) / 1e9;
    double achieved = sent > 1 && elapsed_s > 0 ? (double)(sent - 1) / elapsed_s : 0;
    if (!error_text && qos == 1 && acked < sent) error_text = "not every message was acknowledged in time";
    printf("{\"sent\": %llu, \"acked\": %llu, \"qos\": %d, \"target_rate\": %.1f, \"rate\": %.1f, "
           "\"elapsed_s\": %.6f, \"late_mean_ms\": %.3f, \"late_max_ms\": %.3f, \"late_over_1ms\": %llu, "
           "\"batches\": %llu, \"start_mono_ns\": %lld, \"end_mono_ns\": %lld, \"acks_done_mono_ns\": %lld, "
           "\"closed_mono_ns\": %lld, \"error\": %s%s%s}\n",
           (unsigned long long)sent, (unsigned long long)(qos ? acked : 0), qos, rate, achieved, elapsed_s,
           sent ? late_sum_ns / (double)sent / 1e6 : 0.0, late_max_ns / 1e6, (unsigned long long)late_over_1ms,
           (unsigned long long)batches, (long long)start, (long long)end, (long long)acks_done, (long long)closed,
           error_text ? "\"" : "", error_text ? error_text : "null", error_text ? "\"" : "");
    fflush(stdout);
    return error_text ? 2 : 0;
}
