/* hotloops_frames.h: the frame reading of callgate.detect.hotloops (hotloops.c includes it;
 * plain C, no Python API): byte readers, and link layer -> IPv4/IPv6 -> UDP/TCP of one frame as
 * decode.py reads it. Every length and offset is checked against the frame before it is read. */

#ifndef CALLGATE_HOTLOOPS_FRAMES_H
#define CALLGATE_HOTLOOPS_FRAMES_H

#include <stddef.h>
#include <stdint.h>

#define UDP 17
#define TCP 6
#define GTP_U_PORT 2152
#define KIND_SKIP 0
#define KIND_FAST 1
#define KIND_SLOW 2
#define V6_BIT 0x8000000000000000ull
#define K1 0x9E3779B97F4A7C15ull
#define K2 0xC2B2AE3D27D4EB4Full
#define K3 0x165667B19E3779F9ull

static inline uint32_t be16(const uint8_t *p) { return (uint32_t)p[0] << 8 | p[1]; }
static inline uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}
static inline uint64_t be64(const uint8_t *p) { return (uint64_t)be32(p) << 32 | be32(p + 4); }
static inline uint32_t rd32(const uint8_t *p, int big) { return big ? be32(p) : le32(p); }

/* ---- decode: decode.py's rules, frame by frame ---- */

typedef struct {
    int8_t kind;
    int64_t proto, addr, alen, payload, plen;
    uint64_t src, dst;
} Decoded;

/* IP version nibble at `off` as an ethertype (0 when neither 4 nor 6 or past the frame). */
static uint32_t version_type(const uint8_t *f, size_t len, size_t off) {
    if (len <= off)
        return 0;
    uint32_t version = f[off] >> 4;
    return version == 4 ? 0x0800 : version == 6 ? 0x86DD : 0;
}

/* (ethertype, network header offset) for a tcpdump.org LINKTYPE_* (decode.py `_link`). */
static uint32_t link_layer(int64_t linktype, const uint8_t *f, size_t len, size_t *off) {
    *off = 0;
    switch (linktype) {
    case 1: {
        if (len < 14)
            return 0;
        uint32_t et = be16(f + 12);
        size_t pos = 14;
        while ((et == 0x8100 || et == 0x88A8) && len >= pos + 4) { /* 802.1Q / 802.1ad tags */
            et = be16(f + pos + 2);
            pos += 4;
        }
        *off = pos;
        return et;
    }
    case 12:
    case 14:
    case 101:
        return version_type(f, len, 0);
    case 228:
        return 0x0800;
    case 229:
        return 0x86DD;
    case 113: /* Linux cooked (SLL) */
        if (len < 16)
            return 0;
        *off = 16;
        return be16(f + 14);
    case 276: /* Linux cooked v2 (SLL2) */
        if (len < 20)
            return 0;
        *off = 20;
        return be16(f);
    case 0:
    case 108: /* BSD NULL / LOOP: 4-byte address family */
        if (len < 5)
            return 0;
        *off = 4;
        return version_type(f, len, 4);
    default:
        return 0;
    }
}

/* A per-process secret (set at import) for the grouping table's slots, so that crafted
 * addresses and ports cannot all land in one slot and make grouping quadratic. */
static uint64_t hash_key[4];

static uint64_t keyed_v6(const uint8_t *addrs) {
    uint64_t h = hash_key[0];
    for (int k = 0; k < 4; k++) {
        h = (h ^ be64(addrs + 8 * k) ^ hash_key[k]) * K1;
        h ^= h >> 32;
    }
    return h * K2;
}

static uint64_t fold_v6(const uint8_t *addr) {
    uint64_t h = be64(addr) * K1 ^ be64(addr + 8) * K2;
    h ^= h >> 29;
    return h << 16 | V6_BIT;
}

/* UDP (RFC 768) or TCP (RFC 9293 section 3.1: data offset) at `pos`, payload bounded by `end`
 * (<= len). GTP-U (UDP 2152) is SLOW: decode.py unwraps it. */
static void transport(const uint8_t *f, uint32_t proto, size_t pos, size_t end, Decoded *d) {
    if (proto == UDP && pos + 8 <= end) {
        uint32_t sport = be16(f + pos), dport = be16(f + pos + 2);
        if (sport == GTP_U_PORT || dport == GTP_U_PORT) {
            d->kind = KIND_SLOW;
            return;
        }
        d->src |= sport;
        d->dst |= dport;
        d->payload = (int64_t)(pos + 8);
        d->plen = (int64_t)(end - pos - 8);
    } else if (proto == TCP && pos + 20 <= end) {
        d->src |= be16(f + pos);
        d->dst |= be16(f + pos + 2);
        size_t start = pos + (size_t)(f[pos + 12] >> 4) * 4;
        if (start > end)
            start = end;
        d->payload = (int64_t)start;
        d->plen = (int64_t)(end - start);
    } else {
        return;
    }
    d->kind = KIND_FAST;
    d->proto = proto;
}

/* RFC 791: header length from IHL (at least 5 words), payload bounded by Total Length; only
 * first fragments. */
static void ipv4(const uint8_t *f, size_t len, size_t off, Decoded *d) {
    if (len < off + 20)
        return;
    size_t ihl = (size_t)(f[off] & 0x0F) * 4, total = be16(f + off + 2);
    if (ihl < 20 || total < ihl || (be16(f + off + 6) & 0x1FFF))
        return;
    size_t end = len < off + total ? len : off + total;
    d->addr = (int64_t)(off + 12);
    d->alen = 4;
    d->src = (uint64_t)be32(f + off + 12) << 16;
    d->dst = (uint64_t)be32(f + off + 16) << 16;
    transport(f, f[off + 9], off + ihl, end, d);
}

/* RFC 8200: the extension header chain (hop-by-hop, routing, destination options, fragment) is
 * walked while each header fits the payload; every step moves at least 8 bytes, so a chain
 * ends within len / 8 steps. Non-first fragments are skipped. */
static void ipv6(const uint8_t *f, size_t len, size_t off, Decoded *d) {
    if (len < off + 40)
        return;
    size_t plen = be16(f + off + 4), pos = off + 40;
    uint32_t nxt = f[off + 6];
    size_t end = plen && off + 40 + plen < len ? off + 40 + plen : len;
    while (nxt == 0 || nxt == 43 || nxt == 60 || nxt == 44) {
        if (pos + 8 > end)
            return;
        if (nxt == 44) {
            if (be16(f + pos + 2) & 0xFFF8)
                return;
            nxt = f[pos];
            pos += 8;
        } else {
            nxt = f[pos];
            pos += 8 + (size_t)f[pos + 1] * 8;
        }
    }
    d->addr = (int64_t)(off + 8);
    d->alen = 16;
    d->src = fold_v6(f + off + 8);
    d->dst = fold_v6(f + off + 24);
    transport(f, nxt, pos, end, d);
}

static void decode_frame(int64_t linktype, const uint8_t *f, size_t len, Decoded *d) {
    size_t off;
    uint32_t ethertype = link_layer(linktype, f, len, &off);
    if (ethertype == 0x0800)
        ipv4(f, len, off, d);
    else if (ethertype == 0x86DD)
        ipv6(f, len, off, d);
}

#endif
