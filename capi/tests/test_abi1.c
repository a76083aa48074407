/* A program built against the first ABI 1 header (capi/tests/abi1/loophole_ipc.h, frozen as it
 * was before analysis_taps and tap_capacity were appended to LoopholeConfig), linked against
 * today's library: loophole_config_init writes no byte past that header's struct, sets that
 * header's struct_size, and loophole_create accepts it. Negative control: the canary check
 * trips on a write of today's sizeof(LoopholeConfig) (88 on 64-bit, what the library's
 * loophole_config_init wrote before it was fixed), so the check can fail. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loophole_ipc.h"

#define CHECK(c)                                                                  \
    do {                                                                          \
        if (!(c)) {                                                               \
            fprintf(stderr, "test_abi1.c:%d: CHECK failed: %s\n", __LINE__, #c); \
            exit(1);                                                              \
        }                                                                         \
    } while (0)

/* Today's header's sizeof(LoopholeConfig): two uint32_t fields more, then padding. */
#define TODAY_SIZE (sizeof(LoopholeConfig) + 8)

typedef struct {
    LoopholeConfig cfg;
    unsigned char canary[16];
} Guarded;

static int canary_intact(const Guarded *g) {
    size_t i;
    for (i = 0; i < sizeof g->canary; i++)
        if (g->canary[i] != 0xa5) return 0;
    return 1;
}

int main(void) {
    Guarded g;
    LoopholeServer *s = NULL;
    LoopholeAudio *a = NULL;
    LoopholeControl *c = NULL;
    char err[256] = {0};
    unsigned char big[TODAY_SIZE];

    memset(&g, 0xa5, sizeof g);
    CHECK(loophole_config_init(&g.cfg) == LOOPHOLE_OK);
    CHECK(canary_intact(&g));
    CHECK(g.cfg.struct_size == sizeof(LoopholeConfig));
    CHECK(g.cfg.abi_version == LOOPHOLE_IPC_ABI_VERSION && g.cfg.sample_rate == 48000);
    g.cfg.port = 0;
    CHECK(loophole_create(&g.cfg, &s, &a, &c, err, sizeof err) == LOOPHOLE_OK);
    CHECK(s != NULL && a != NULL && c != NULL);
    loophole_server_free(s);
    loophole_audio_free(a);
    loophole_control_free(c);

    /* The control: a write of today's size into this header's struct trips the canary. */
    memset(&g, 0xa5, sizeof g);
    memset(big, 0, sizeof big);
    memcpy(&g, big, sizeof big);
    CHECK(!canary_intact(&g));
    printf("ok: a program built against the first ABI 1 header: no byte written past its config, created\n");
    return 0;
}
