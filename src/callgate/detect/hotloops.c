/* callgate.detect.hotloops: the detector's hot loops in C (docs/detection.md, "Speed").
 *
 * pcap_walk    the classic pcap record chain of one chunk (capture/pcap.py)
 * pcapng_walk  the Enhanced Packet Blocks of one pcapng chunk (capture/pcapng.py)
 * decode       link layer -> IPv4/IPv6 -> UDP/TCP of every frame of a batch (batchdecode.py)
 * group        the distinct directional 5-tuples of a batch (batchfeed.py)
 * select/tally the payloads to inspect and the counters per flow (pcapfeed.py, batchfeed.py)
 * distinct     how many different byte values a payload holds (flow.py's randomness)
 *
 * The frame reading (link layer, IP, UDP/TCP) is in hotloops_frames.h.
 *
 * Every input is hostile: each length and offset is checked against the buffer before it is read
 * (truncated records, caplen past the chunk, unknown link types, IPv4 IHL < 5, IPv6 extension
 * header chains), and an output array too small for its results is a ValueError, never a write
 * past it. Each function gives exactly what the numpy/Python code it replaces gives
 * (tests/unit/detect/test_detect_native.py compares them). Arrays are passed as buffers (numpy
 * arrays, C-contiguous): this module needs no numpy headers to build. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <math.h>
#include <string.h>
#include <unistd.h> /* getentropy */

#include "hotloops_frames.h"

#define MAX_RECORD (256u * 1024u * 1024u) /* capture/packets.py MAX_RECORD */

/* ---- arguments: every array is checked before it is read or written ---- */

/* What an argument must be: BYTES any C-contiguous buffer (read as bytes: the capture data);
 * I64 a one-dimensional C-contiguous array of 8-byte integers (int64 or uint64: endpoint codes
 * are hash values, either reading is the same bits), F64 of float64, I8 of 1-byte integers; all
 * in native byte order and aligned to their item size. OUT: written, so writable too. */
enum { BYTES = 0, I64 = 1, F64 = 2, I8 = 3, OUT = 8 };

/* The item codes (struct module syntax) each kind accepts, and what its errors call it. */
static const char *const CODES[] = {"", "qQlL", "d", "bB"};
static const char *const WHAT[] = {"a bytes-like object", "an array of 8-byte integers",
                                   "an array of float64", "an array of 1-byte integers"};

/* The buffer of `arg` as `kind` requires (above), into `view`; else a TypeError naming the
 * function, the argument and what it is (format, item size, dimensions, contiguity), with
 * nothing held. */
static int get_array(PyObject *arg, int kind, Py_buffer *view, const char *fn, const char *name) {
    int type = kind & ~OUT;
    int flags = PyBUF_C_CONTIGUOUS | (type == BYTES ? 0 : PyBUF_FORMAT) |
                (kind & OUT ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(arg, view, flags) != 0) {
        PyObject *type_, *value, *trace;
        PyErr_Fetch(&type_, &value, &trace);
        PyErr_Format(PyExc_TypeError, "%s: %s must be %s, C-contiguous%s; got %.100s (%S)", fn,
                     name, WHAT[type], kind & OUT ? " and writable" : "", Py_TYPE(arg)->tp_name,
                     value != NULL ? value : Py_None);
        Py_XDECREF(type_);
        Py_XDECREF(value);
        Py_XDECREF(trace);
        return 0;
    }
    if (type == BYTES)
        return 1;
    const char *format = view->format != NULL ? view->format : "B";
    const char *code = format;
    if (*code == '@' || *code == '=' || *code == (PY_LITTLE_ENDIAN ? '<' : '>'))
        code++;
    Py_ssize_t size = type == I8 ? 1 : 8;
    int aligned = (uintptr_t)view->buf % (uintptr_t)size == 0;
    if (view->ndim != 1 || view->itemsize != size || code[0] == '\0' || code[1] != '\0' ||
        strchr(CODES[type], code[0]) == NULL || !aligned) {
        PyErr_Format(PyExc_TypeError,
                     "%s: %s must be %s (format %s, native byte order, aligned, one dimension); "
                     "got format '%.20s', item size %zd, %d dimension(s)%s",
                     fn, name, WHAT[type], CODES[type], format, view->itemsize, view->ndim,
                     aligned ? "" : ", unaligned");
        PyBuffer_Release(view);
        return 0;
    }
    return 1;
}

/* The `count` arguments of `fn` in `args`, each as `kinds[i]` requires, into `views` (all
 * released and 0 returned at the first that is not). */
static int get_arrays(PyObject *const *args, const int *kinds, const char *const *names,
                      Py_ssize_t count, Py_buffer *const *views, const char *fn) {
    for (Py_ssize_t i = 0; i < count; i++)
        if (!get_array(args[i], kinds[i], views[i], fn, names[i])) {
            while (i-- > 0)
                PyBuffer_Release(views[i]);
            return 0;
        }
    return 1;
}

/* An output (or input) array of at least `count` items of `size` bytes, else ValueError. */
static int fits(const Py_buffer *view, Py_ssize_t count, Py_ssize_t size, const char *name) {
    if (count < 0 || view->len / size < count) {
        PyErr_Format(PyExc_ValueError, "%s: room for %zd items, %zd needed", name,
                     view->len / size, count);
        return 0;
    }
    return 1;
}

/* pcap_walk(chunk, big_endian, unit, starts, caplens, stamps) -> (records, rest, first, last)
 * The complete records of `chunk` (which begins with one), as many as the outputs hold (int64
 * starts and caplens, float64 stamps): frame offset, captured length and time (seconds +
 * fraction * unit) of each, and the earliest and latest of those times (0.0 when there is no
 * record); `rest` is where the walk stopped: the first incomplete record (one whose caplen does
 * not fit the chunk, MAX_RECORD or not: the caller reports it), or the first record there was no
 * room for. */
static PyObject *pcap_walk(PyObject *self, PyObject *args) {
    Py_buffer chunk, starts, caplens, stamps;
    PyObject *argv[4];
    int big;
    double unit;
    (void)self;
    if (!PyArg_ParseTuple(args, "OpdOOO:pcap_walk", &argv[0], &big, &unit, &argv[1], &argv[2], &argv[3]))
        return NULL;
    static const int kinds[] = {BYTES, I64 | OUT, I64 | OUT, F64 | OUT};
    static const char *const names[] = {"chunk", "starts", "caplens", "stamps"};
    Py_buffer *const all[] = {&chunk, &starts, &caplens, &stamps};
    if (!get_arrays(argv, kinds, names, 4, all, "pcap_walk"))
        return NULL;
    Py_ssize_t room = starts.len / 8;
    if (caplens.len / 8 < room)
        room = caplens.len / 8;
    if (stamps.len / 8 < room)
        room = stamps.len / 8;
    const uint8_t *buf = chunk.buf;
    size_t size = (size_t)chunk.len, pos = 0;
    int64_t *start = starts.buf, *caplen = caplens.buf;
    double *stamp = stamps.buf;
    Py_ssize_t count = 0;
    double first = 0.0, last = 0.0;
    while (size - pos >= 16 && count < room) {
        uint32_t cap = rd32(buf + pos + 8, big);
        if ((size_t)cap > size - pos - 16)
            break;
        double t = (double)rd32(buf + pos, big) + (double)rd32(buf + pos + 4, big) * unit;
        start[count] = (int64_t)(pos + 16);
        caplen[count] = cap;
        stamp[count] = t;
        if (count == 0 || t < first)
            first = t;
        if (count == 0 || t > last)
            last = t;
        count++;
        pos += 16 + (size_t)cap;
    }
    PyObject *result = Py_BuildValue("nndd", count, (Py_ssize_t)pos, first, last);
    PyBuffer_Release(&chunk);
    PyBuffer_Release(&starts);
    PyBuffer_Release(&caplens);
    PyBuffer_Release(&stamps);
    return result;
}

/* pcapng_walk(chunk, big_endian, links, units, starts, caplens, stamps, linktypes)
 *   -> (packets, rest, simple, first, last)
 * The well-formed Enhanced Packet Blocks (pcapng section 4.3) at the start of `chunk`, of
 * described interfaces (`links`: int64 link type and `units`: float64 seconds per tick, per
 * interface), as many as the outputs hold: each packet's frame offset, captured length (at most
 * what the block holds), time and link type, and the earliest and latest time (0.0 when no
 * packet). The walk stops at the first block it does not take
 * (`rest` is where it begins): simple = 1 when that is an incomplete block, the end of the chunk,
 * or the outputs being full; 0 when it is another block type, a bad length or an undescribed
 * interface, which the caller reads itself, with its precise errors. */
static PyObject *pcapng_walk(PyObject *self, PyObject *args) {
    Py_buffer chunk, links, units, starts, caplens, stamps, linktypes;
    PyObject *argv[7];
    int big;
    (void)self;
    if (!PyArg_ParseTuple(args, "OpOOOOOO:pcapng_walk", &argv[0], &big, &argv[1], &argv[2], &argv[3], &argv[4],
                          &argv[5], &argv[6]))
        return NULL;
    static const int kinds[] = {BYTES, I64, F64, I64 | OUT, I64 | OUT, F64 | OUT, I64 | OUT};
    static const char *const names[] = {"chunk", "links", "units", "starts", "caplens", "stamps",
                                        "linktypes"};
    Py_buffer *const all[] = {&chunk, &links, &units, &starts, &caplens, &stamps, &linktypes};
    if (!get_arrays(argv, kinds, names, 7, all, "pcapng_walk"))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t ifaces = links.len / 8, room = starts.len / 8;
    if (caplens.len / 8 < room)
        room = caplens.len / 8;
    if (stamps.len / 8 < room)
        room = stamps.len / 8;
    if (linktypes.len / 8 < room)
        room = linktypes.len / 8;
    if (fits(&units, ifaces, 8, "units")) {
        const uint8_t *buf = chunk.buf;
        const int64_t *link = links.buf;
        const double *unit = units.buf;
        size_t size = (size_t)chunk.len, pos = 0;
        int64_t *start = starts.buf, *caplen = caplens.buf, *linktype = linktypes.buf;
        double *stamp = stamps.buf;
        Py_ssize_t count = 0;
        int simple = 1;
        double first = 0.0, last = 0.0;
        while (size - pos >= 12 && count < room) {
            uint32_t btype = rd32(buf + pos, big), blen = rd32(buf + pos + 4, big);
            if (btype != 6 || blen < 32 || blen % 4 || blen > MAX_RECORD) {
                simple = 0;
                break;
            }
            if ((size_t)blen > size - pos)
                break;
            uint32_t iface = rd32(buf + pos + 8, big);
            if ((uint64_t)iface >= (uint64_t)ifaces) {
                simple = 0;
                break;
            }
            uint64_t ticks = (uint64_t)rd32(buf + pos + 12, big) << 32 | rd32(buf + pos + 16, big);
            uint32_t cap = rd32(buf + pos + 20, big);
            start[count] = (int64_t)(pos + 28);
            caplen[count] = cap < blen - 32 ? cap : blen - 32;
            double t = (double)ticks * unit[iface];
            stamp[count] = t;
            linktype[count] = link[iface];
            if (count == 0 || t < first)
                first = t;
            if (count == 0 || t > last)
                last = t;
            count++;
            pos += blen;
        }
        result = Py_BuildValue("nnidd", count, (Py_ssize_t)pos, simple, first, last);
    }
    PyBuffer_Release(&chunk);
    PyBuffer_Release(&links);
    PyBuffer_Release(&units);
    PyBuffer_Release(&starts);
    PyBuffer_Release(&caplens);
    PyBuffer_Release(&stamps);
    PyBuffer_Release(&linktypes);
    return result;
}

/* decode(data, starts, caplens, linktypes, kind, proto, src, dst, addr, alen, payload, plen)
 * Frame i is data[starts[i] : starts[i] + caplens[i]] (int64 arrays; linktypes too). Fills the
 * outputs (kind int8, src/dst uint64, the rest int64) as batchdecode.Fields: kind FAST with the
 * endpoint codes, the offsets in `data` of the source address and of the payload; SLOW for
 * GTP-U (decoded by decode.py); SKIP (all zeros) for anything else. A frame outside `data` is
 * a ValueError. */
static PyObject *decode(PyObject *self, PyObject *args) {
    Py_buffer data, starts, caplens, links, kinds, protos, srcs, dsts, addrs, alens, pays, plens;
    PyObject *argv[12];
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOOOOOOOOOO:decode", &argv[0], &argv[1], &argv[2], &argv[3], &argv[4], &argv[5],
                          &argv[6], &argv[7], &argv[8], &argv[9], &argv[10], &argv[11]))
        return NULL;
    static const int types[] = {BYTES,     I64,       I64,       I64,       I8 | OUT,  I64 | OUT,
                                I64 | OUT, I64 | OUT, I64 | OUT, I64 | OUT, I64 | OUT, I64 | OUT};
    static const char *const names[] = {"data", "starts",  "caplens", "linktypes",
                                        "kind", "proto",   "src",     "dst",
                                        "addr", "alen",    "payload", "plen"};
    Py_buffer *const all[] = {&data, &starts, &caplens, &links, &kinds, &protos,
                              &srcs, &dsts,   &addrs,   &alens, &pays,  &plens};
    if (!get_arrays(argv, types, names, 12, all, "decode"))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t n = starts.len / 8;
    if (fits(&caplens, n, 8, "caplens") && fits(&links, n, 8, "linktypes") &&
        fits(&kinds, n, 1, "kind") && fits(&protos, n, 8, "proto") && fits(&srcs, n, 8, "src") &&
        fits(&dsts, n, 8, "dst") && fits(&addrs, n, 8, "addr") && fits(&alens, n, 8, "alen") &&
        fits(&pays, n, 8, "payload") && fits(&plens, n, 8, "plen")) {
        const uint8_t *buf = data.buf;
        const int64_t *start = starts.buf, *caplen = caplens.buf, *link = links.buf;
        int8_t *kind = kinds.buf;
        int64_t *proto = protos.buf, *addr = addrs.buf, *alen = alens.buf;
        int64_t *payload = pays.buf, *plen = plens.buf;
        uint64_t *src = srcs.buf, *dst = dsts.buf;
        Py_ssize_t i;
        for (i = 0; i < n; i++) {
            int64_t at = start[i], cap = caplen[i];
            if (at < 0 || cap < 0 || at > data.len || cap > data.len - at) {
                PyErr_Format(PyExc_ValueError, "frame %zd (%lld bytes at %lld) is outside the "
                             "%zd-byte buffer", i, (long long)cap, (long long)at, data.len);
                break;
            }
            Decoded d = {0};
            decode_frame(link[i], buf + at, (size_t)cap, &d);
            kind[i] = d.kind;
            if (d.kind != KIND_FAST) {
                d = (Decoded){.kind = d.kind};
            } else {
                d.addr += at;
                d.payload += at;
            }
            proto[i] = d.proto;
            src[i] = d.src;
            dst[i] = d.dst;
            addr[i] = d.addr;
            alen[i] = d.alen;
            payload[i] = d.payload;
            plen[i] = d.plen;
        }
        if (i == n)
            result = Py_NewRef(Py_None);
    }
    for (size_t k = 0; k < sizeof all / sizeof all[0]; k++)
        PyBuffer_Release(all[k]);
    return result;
}

/* ---- group: distinct directional 5-tuples, in order of first appearance ---- */

/* group(data, kind, src, dst, proto, addr, alen, first, inv) -> groups
 * For the n packets (int8 kind, uint64 endpoint codes, int64 proto; addr/alen: where each one's
 * source address is in `data`, destination right after it): inv[i] = the group of packet i (-1
 * for a SKIP packet), first[g] = the first packet of group g, groups numbered in order of their
 * first packet. Packets are the
 * same 5-tuple when codes and transport are equal and, for IPv6 (alen 16, whose codes are
 * hashes), the 32 address bytes too: a hash collision never merges two flows. IPv4 codes are
 * the exact address and port. An IPv6 address outside `data` is a ValueError. */
static PyObject *group(PyObject *self, PyObject *args) {
    Py_buffer data, kinds, srcs, dsts, protos, addrs, alens, firsts, invs;
    PyObject *argv[9];
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOOOOOOO:group", &argv[0], &argv[1], &argv[2], &argv[3], &argv[4], &argv[5],
                          &argv[6], &argv[7], &argv[8]))
        return NULL;
    static const int types[] = {BYTES, I8, I64, I64, I64, I64, I64, I64 | OUT, I64 | OUT};
    static const char *const names[] = {"data", "kind", "src", "dst", "proto",
                                        "addr", "alen", "first", "inv"};
    Py_buffer *const all[] = {&data, &kinds, &srcs, &dsts, &protos, &addrs, &alens, &firsts, &invs};
    if (!get_arrays(argv, types, names, 9, all, "group"))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t n = srcs.len / 8;
    if (fits(&kinds, n, 1, "kind") && fits(&dsts, n, 8, "dst") && fits(&protos, n, 8, "proto") &&
        fits(&addrs, n, 8, "addr") && fits(&alens, n, 8, "alen") && fits(&firsts, n, 8, "first") &&
        fits(&invs, n, 8, "inv")) {
        const int8_t *kind = kinds.buf;
        const uint64_t *src = srcs.buf, *dst = dsts.buf;
        const int64_t *proto = protos.buf, *addr = addrs.buf, *alen = alens.buf;
        int64_t *first = firsts.buf, *inv = invs.buf;
        const uint8_t *buf = data.buf;
        size_t cap = 16;
        while (cap < (size_t)n * 2)
            cap <<= 1;
        int64_t *slots = malloc(cap * sizeof *slots); /* group + 1; 0 = empty */
        if (slots == NULL) {
            PyErr_NoMemory();
        } else {
            memset(slots, 0, cap * sizeof *slots);
            Py_ssize_t groups = 0, i;
            int bad = 0;
            for (i = 0; i < n && !bad; i++) {
                if (kind[i] == KIND_SKIP) {
                    inv[i] = -1;
                    continue;
                }
                int64_t a = addr[i], l = alen[i];
                if (l == 16 && (a < 0 || a > data.len || 32 > data.len - a)) {
                    bad = 1;
                    break;
                }
                uint64_t h = (src[i] ^ hash_key[1]) * K1 ^ (dst[i] ^ hash_key[2]) * K2 ^
                             ((uint64_t)proto[i] ^ hash_key[3]) * K3;
                if (l == 16) /* the addresses themselves, keyed: folded codes can be made to
                              * collide (fold_v6 is invertible), the slots cannot */
                    h ^= keyed_v6(buf + a);
                size_t s = (size_t)(h ^ h >> 31) & (cap - 1);
                for (;;) {
                    int64_t g = slots[s] - 1;
                    if (g < 0) {
                        slots[s] = groups + 1;
                        first[groups] = i;
                        inv[i] = groups++;
                        break;
                    }
                    int64_t j = first[g];
                    if (src[j] == src[i] && dst[j] == dst[i] && proto[j] == proto[i] &&
                        (l != 16 || (alen[j] == 16 && memcmp(buf + a, buf + addr[j], 32) == 0))) {
                        inv[i] = g;
                        break;
                    }
                    s = (s + 1) & (cap - 1);
                }
            }
            free(slots);
            if (bad)
                PyErr_SetString(PyExc_ValueError, "an IPv6 address is outside the buffer");
            else
                result = PyLong_FromSsize_t(groups);
        }
    }
    for (size_t k = 0; k < sizeof all / sizeof all[0]; k++)
        PyBuffer_Release(all[k]);
    return result;
}

/* ---- select and tally: batchfeed's per-flow bookkeeping ---- */

/* select(inv, plen, side, owner, room, out_owner, out_packet, out_seen0, out_seen1) -> count
 * The payloads to inspect, as batchfeed._inspect_live picks them: packet i belongs to group
 * inv[i] (-1: none), a group to flow owner[g] on side[g] (0/1); a flow with room[o] > 0 takes its
 * first room[o] packets that carry a payload (plen > 0), in order. Out: per payload picked, its
 * flow, packet and the packets of each side that flow has had in the batch up to and including
 * it; grouped by flow (flows in number order), in packet order within a flow. */
static PyObject *select_payloads(PyObject *self, PyObject *args) {
    Py_buffer invs, plens, sides, owners, rooms, oo, op, o0, o1;
    PyObject *argv[9];
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOOOOOOO:select", &argv[0], &argv[1], &argv[2], &argv[3], &argv[4], &argv[5],
                          &argv[6], &argv[7], &argv[8]))
        return NULL;
    static const int types[] = {I64, I64, I64, I64, I64, I64 | OUT, I64 | OUT, I64 | OUT, I64 | OUT};
    static const char *const names[] = {"inv", "plen", "side", "owner", "room",
                                        "out_owner", "out_packet", "out_seen0", "out_seen1"};
    Py_buffer *const all[] = {&invs, &plens, &sides, &owners, &rooms, &oo, &op, &o0, &o1};
    if (!get_arrays(argv, types, names, 9, all, "select"))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t n = invs.len / 8, groups = sides.len / 8, flows = rooms.len / 8;
    int64_t *at = NULL, *seen = NULL;
    if (!fits(&plens, n, 8, "plen") || !fits(&owners, groups, 8, "owner"))
        goto done;
    const int64_t *inv = invs.buf, *plen = plens.buf, *side = sides.buf, *owner = owners.buf;
    const int64_t *room = rooms.buf;
    Py_ssize_t g, i, o, total = 0;
    for (g = 0; g < groups; g++)
        if (owner[g] < 0 || owner[g] >= flows || side[g] < 0 || side[g] > 1) {
            PyErr_SetString(PyExc_ValueError, "group with a bad flow or side");
            goto done;
        }
    at = calloc((size_t)flows + 1, sizeof *at);   /* where each flow's payloads go */
    seen = calloc((size_t)flows * 2 + 1, sizeof *seen); /* packets per flow and side so far */
    if (at == NULL || seen == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (i = 0; i < n; i++) { /* payloads per flow, at most its room */
        if (inv[i] < 0 || inv[i] >= groups) {
            if (inv[i] >= groups) {
                PyErr_SetString(PyExc_ValueError, "packet of a group that does not exist");
                goto done;
            }
            continue;
        }
        o = owner[inv[i]];
        if (plen[i] > 0 && seen[o] < room[o])
            seen[o]++;
    }
    for (o = 0; o < flows; o++) {
        int64_t picked = seen[o];
        at[o] = total;
        total += picked;
    }
    if (!fits(&oo, total, 8, "out_owner") || !fits(&op, total, 8, "out_packet") ||
        !fits(&o0, total, 8, "out_seen0") || !fits(&o1, total, 8, "out_seen1"))
        goto done;
    memset(seen, 0, ((size_t)flows * 2 + 1) * sizeof *seen);
    int64_t *out_owner = oo.buf, *out_packet = op.buf, *out0 = o0.buf, *out1 = o1.buf;
    int64_t *taken = calloc((size_t)flows + 1, sizeof *taken);
    if (taken == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (i = 0; i < n; i++) {
        if (inv[i] < 0)
            continue;
        o = owner[inv[i]];
        if (room[o] <= 0)
            continue;
        seen[2 * o + side[inv[i]]]++;
        if (plen[i] > 0 && taken[o] < room[o]) {
            int64_t k = at[o] + taken[o]++;
            out_owner[k] = o;
            out_packet[k] = i;
            out0[k] = seen[2 * o];
            out1[k] = seen[2 * o + 1];
        }
    }
    free(taken);
    result = PyLong_FromSsize_t(total);
done:
    free(at);
    free(seen);
    for (size_t k = 0; k < sizeof all / sizeof all[0]; k++)
        PyBuffer_Release(all[k]);
    return result;
}

/* tally(inv, caplen, stamps, counts, octets, last) -> None
 * Per group (inv[i], -1: none): packets, captured bytes and the latest time. */
static PyObject *tally(PyObject *self, PyObject *args) {
    Py_buffer invs, caplens, stamps, cs, os_, ls;
    PyObject *argv[6];
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOOOO:tally", &argv[0], &argv[1], &argv[2], &argv[3], &argv[4], &argv[5]))
        return NULL;
    static const int types[] = {I64, I64, F64, I64 | OUT, I64 | OUT, F64 | OUT};
    static const char *const names[] = {"inv", "caplen", "stamps", "counts", "octets", "last"};
    Py_buffer *const all[] = {&invs, &caplens, &stamps, &cs, &os_, &ls};
    if (!get_arrays(argv, types, names, 6, all, "tally"))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t n = invs.len / 8, groups = cs.len / 8;
    if (fits(&caplens, n, 8, "caplen") && fits(&stamps, n, 8, "stamps") &&
        fits(&os_, groups, 8, "octets") && fits(&ls, groups, 8, "last")) {
        const int64_t *inv = invs.buf, *caplen = caplens.buf;
        const double *stamp = stamps.buf;
        int64_t *count = cs.buf, *octets = os_.buf;
        double *last = ls.buf;
        Py_ssize_t g, i;
        for (g = 0; g < groups; g++) {
            count[g] = 0;
            octets[g] = 0;
            last[g] = -HUGE_VAL;
        }
        for (i = 0; i < n; i++) {
            int64_t k = inv[i];
            if (k < 0)
                continue;
            if (k >= groups) {
                PyErr_SetString(PyExc_ValueError, "packet of a group that does not exist");
                break;
            }
            count[k]++;
            octets[k] += caplen[i];
            if (stamp[i] > last[k])
                last[k] = stamp[i];
        }
        if (i == n)
            result = Py_NewRef(Py_None);
    }
    for (size_t k = 0; k < sizeof all / sizeof all[0]; k++)
        PyBuffer_Release(all[k]);
    return result;
}

/* ---- distinct: flow.py's payload randomness ---- */

/* distinct(data) -> count: how many different byte values `data` holds (bytes-like). */
static PyObject *distinct(PyObject *self, PyObject *arg) {
    Py_buffer data;
    (void)self;
    if (!get_array(arg, BYTES, &data, "distinct", "data"))
        return NULL;
    uint8_t seen[256] = {0};
    const uint8_t *byte = data.buf;
    Py_ssize_t count = 0;
    for (Py_ssize_t i = 0; i < data.len; i++) {
        count += !seen[byte[i]];
        seen[byte[i]] = 1;
    }
    PyBuffer_Release(&data);
    return PyLong_FromSsize_t(count);
}

static PyMethodDef methods[] = {
    {"pcap_walk", pcap_walk, METH_VARARGS, "The complete records of a classic pcap chunk."},
    {"pcapng_walk", pcapng_walk, METH_VARARGS, "The Enhanced Packet Blocks of a pcapng chunk."},
    {"decode", decode, METH_VARARGS, "Link, IP and UDP/TCP headers of every frame of a batch."},
    {"group", group, METH_VARARGS, "The distinct directional 5-tuples of a batch."},
    {"select", select_payloads, METH_VARARGS, "The payloads of a batch to inspect, per flow."},
    {"tally", tally, METH_VARARGS, "Packets, bytes and last time per group."},
    {"distinct", distinct, METH_O, "How many different byte values a bytes-like object holds."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "callgate.detect.hotloops",
    .m_doc = "The detector's record walk, header decode and grouping, compiled (docs/detection.md).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit_hotloops(void) {
    if (getentropy(hash_key, sizeof hash_key) != 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    return PyModule_Create(&module);
}
