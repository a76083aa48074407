/*
 * A minimal loophole-ipc client for the C and C++ ABI tests (test code only: blocking connect
 * and send, non-blocking receive, answers recorded by request id). Speaks just enough of
 * docs/specs/ipc/: the preface, 8-byte frame headers, JSON envelopes found by substring.
 */
#ifndef LOOPHOLE_MINI_CLIENT_H
#define LOOPHOLE_MINI_CLIENT_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MC_MAX_ID 64

typedef struct mc_answer {
    char kind;      /* 0 = none yet, 'a' = ack, 'p' = pong, 'e' = error */
    char code[40];  /* error code */
    int count;      /* answers seen for this id (must end at exactly 1) */
} mc_answer;

typedef struct mini_client {
    int fd;
    unsigned char buf[1 << 16];
    size_t len;
    int preface_done;
    int frames;
    int meters;
    int transport;
    int goodbye;
    mc_answer answers[MC_MAX_ID];
} mini_client;

static int mc_connect(mini_client *c, uint16_t port) {
    struct sockaddr_in a;
    int one = 1;
    memset(c, 0, sizeof *c);
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c->fd < 0) return -1;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(c->fd, (struct sockaddr *)&a, sizeof a) != 0) return -1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    {
        static const unsigned char preface[8] = {0x89, 'L', 'P', 'H', 0x0D, 0x0A, 0x1A, 0x0A};
        if (send(c->fd, preface, 8, 0) != 8) return -1;
    }
    return 0;
}

static int mc_send(mini_client *c, const char *json) {
    size_t n = strlen(json);
    unsigned char h[8] = {(unsigned char)(n >> 24), (unsigned char)(n >> 16),
                          (unsigned char)(n >> 8), (unsigned char)n, 1, 0, 0, 0};
    if (send(c->fd, h, 8, 0) != 8) return -1;
    if (send(c->fd, json, n, 0) != (ssize_t)n) return -1;
    return 0;
}

/* Finds `"key":"` and copies the string value (up to cap-1 bytes). */
static int mc_str(const char *p, const char *key, char *out, size_t cap) {
    char pat[48];
    const char *s;
    size_t i = 0;
    snprintf(pat, sizeof pat, "\"%s\":\"", key);
    s = strstr(p, pat);
    if (!s) return 0;
    s += strlen(pat);
    while (s[i] && s[i] != '"' && i + 1 < cap) { out[i] = s[i]; i++; }
    out[i] = 0;
    return 1;
}

static void mc_frame(mini_client *c, char *json) {
    char type[16] = "", name[40] = "", code[40] = "";
    const char *r;
    long id = -1;
    c->frames++;
    mc_str(json, "type", type, sizeof type);
    mc_str(json, "name", name, sizeof name);
    if (strcmp(name, "meters") == 0) c->meters++;
    if (strcmp(name, "transport.state") == 0) c->transport++;
    if (strcmp(name, "goodbye") == 0) c->goodbye++;
    r = strstr(json, "\"ref\":");
    if (r) id = strtol(r + 6, NULL, 10);
    if (id < 0 || id >= MC_MAX_ID) return;
    if (strcmp(type, "reply") == 0) {
        c->answers[id].kind = strcmp(name, "pong") == 0 ? 'p' : 'a';
    } else if (strcmp(type, "error") == 0) {
        c->answers[id].kind = 'e';
        mc_str(json, "code", code, sizeof code);
        memcpy(c->answers[id].code, code, sizeof code);
    } else {
        return;
    }
    c->answers[id].count++;
}

/* Reads what has arrived (never blocks) and records every complete frame. */
static void mc_poll(mini_client *c) {
    for (;;) {
        ssize_t n = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len - 1, MSG_DONTWAIT);
        if (n <= 0) break;
        c->len += (size_t)n;
    }
    if (!c->preface_done && c->len >= 8) {
        memmove(c->buf, c->buf + 8, c->len - 8);
        c->len -= 8;
        c->preface_done = 1;
    }
    while (c->preface_done && c->len >= 8) {
        size_t n = ((size_t)c->buf[0] << 24) | ((size_t)c->buf[1] << 16) |
                   ((size_t)c->buf[2] << 8) | c->buf[3];
        char saved;
        if (c->len < 8 + n) break;
        saved = (char)c->buf[8 + n];
        c->buf[8 + n] = 0;
        mc_frame(c, (char *)c->buf + 8);
        c->buf[8 + n] = (unsigned char)saved;
        memmove(c->buf, c->buf + 8 + n, c->len - 8 - n);
        c->len -= 8 + n;
    }
}

static void mc_close(mini_client *c) {
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
}

#endif /* LOOPHOLE_MINI_CLIENT_H */
