// SPDX-License-Identifier: GPL-2.0
/* callgate's kernel fast path for TURN channel data (docs/relay-fast-path.md).
 *
 * A tc program (attached with a tcx link at ingress) that forwards UDP ChannelData between a client
 * and a peer whose channel is bound and whose permission is live, as the Python relay would:
 *
 *   client -> relay listener, ChannelData (RFC 8656 §12.5)  =>  relay address -> peer, the payload
 *   peer -> relayed address                                  =>  listener -> client, ChannelData
 *
 * The Python server is the control plane: it writes one entry per direction of each bound channel
 * (to_peer, to_client) with the expiry of the channel and of the peer's permission, whichever comes
 * first, and removes them; it reads the packet and byte counters back. Everything this program does
 * not recognise exactly goes on to the stack unchanged (TC_ACT_OK): STUN, Send/Data indications,
 * IP options, fragments, GSO, a ChannelData length that is not exactly the datagram's, reserved
 * channel numbers, expired entries, a destination without a route or neighbour.
 *
 * IPv4 only. The UDP checksum of a rewritten datagram is 0 ("no checksum", RFC 768): the payload is
 * not read here. The IPv4 header checksum is recomputed.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define AF_INET 2
#define LOOPBACK_IFINDEX 1
#define CHANNEL_MIN 0x4000 /* RFC 8656 §12: 0x4000-0x4FFF; 0x5000-0xFFFF reserved */
#define CHANNEL_MAX 0x4FFF
#define FIB_LOOKUP_SKIP_NEIGH (1U << 2) /* Linux 6.3; newer than Debian 12's headers */

struct to_peer_key {
	__u32 client_ip;
	__u32 server_ip;
	__u16 client_port;
	__u16 server_port;
	__u16 channel;
	__u16 pad;
};

struct to_peer_value {
	__u32 peer_ip;
	__u32 relay_ip;
	__u16 peer_port;
	__u16 relay_port;
	__u32 pad;
	__u64 expires_ns; /* CLOCK_MONOTONIC, bpf_ktime_get_ns() */
	__u64 packets;
	__u64 bytes; /* payload bytes, as the userspace counters */
};

struct to_client_key {
	__u32 peer_ip;
	__u32 relay_ip;
	__u16 peer_port;
	__u16 relay_port;
};

struct to_client_value {
	__u32 client_ip;
	__u32 server_ip;
	__u16 client_port;
	__u16 server_port;
	__u16 channel;
	__u16 pad;
	__u64 expires_ns;
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct to_peer_key);
	__type(value, struct to_peer_value);
} to_peer SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct to_client_key);
	__type(value, struct to_client_value);
} to_client SEC(".maps");

/* Packets that took the fast path, and those it looked at and left to the stack (per CPU). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

enum { STAT_FORWARDED = 0, STAT_PASSED = 1 };

static __always_inline void count(__u32 which)
{
	__u64 *value = bpf_map_lookup_elem(&stats, &which);
	if (value)
		*value += 1;
}

static __always_inline __u16 ip_checksum(struct iphdr *ip)
{
	__u32 sum = 0;
	__u16 *word = (__u16 *)ip;
	ip->check = 0;
#pragma unroll
	for (int i = 0; i < 10; i++)
		sum += word[i];
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return ~sum;
}

/* Where a datagram to `daddr` leaves: the egress ifindex (0: give up), and whether it goes to a
 * local address (through the loopback device) rather than to a neighbour. */
static __always_inline int route(struct __sk_buff *skb, __u32 saddr, __u32 daddr, __u16 tot_len,
				 int *local)
{
	struct bpf_fib_lookup fib = {};
	fib.family = AF_INET;
	fib.l4_protocol = IPPROTO_UDP;
	fib.tot_len = tot_len;
	fib.ipv4_src = saddr;
	fib.ipv4_dst = daddr;
	/* looked up as if it came in on the loopback device: the kernel wants forwarding enabled on
	 * the device named here, and only lo's (net.ipv4.conf.lo.forwarding) is needed that way,
	 * since lo never receives a datagram from another host. The neighbour is left to
	 * bpf_redirect_neigh, which resolves it when it is not known yet. */
	fib.ifindex = LOOPBACK_IFINDEX;
	int rc = bpf_fib_lookup(skb, &fib, sizeof(fib), FIB_LOOKUP_SKIP_NEIGH);
	if (rc == BPF_FIB_LKUP_RET_SUCCESS) {
		*local = 0;
		return fib.ifindex;
	}
	if (rc == BPF_FIB_LKUP_RET_NOT_FWDED) {
		/* A local address: a peer on this host (another allocation's relayed address, or a
		 * process). Delivered through lo, where the stack takes a datagram from one of its own
		 * addresses without a route attached only from 127.0.0.0/8: any other source is
		 * dropped as a martian: then *local = 2 and no device (relay_to_relay may still
		 * take it, or the Python relay hands it to the other allocation in-process). */
		if ((bpf_ntohl(saddr) >> 24) != 127) {
			*local = 2;
			return 0;
		}
		*local = 1;
		return LOOPBACK_IFINDEX;
	}
	return 0;
}

static __always_inline int send_on(int ifindex, int local)
{
	return local ? bpf_redirect(ifindex, 0) : bpf_redirect_neigh(ifindex, 0, 0, 0);
}

/* Write the Ethernet, IPv4 and UDP headers of the rewritten datagram (after the room changed). */
static __always_inline int rewrite(struct __sk_buff *skb, __u32 saddr, __u32 daddr, __u16 sport,
				   __u16 dport, __u16 udp_len, int local)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	struct udphdr *udp = (void *)ip + sizeof(*ip);
	if ((void *)(udp + 1) > end)
		return -1;
	if (local) { /* the loopback device's own (all-zero) address, or the stack drops it */
		__builtin_memset(eth->h_source, 0, ETH_ALEN);
		__builtin_memset(eth->h_dest, 0, ETH_ALEN);
	}
	ip->saddr = saddr;
	ip->daddr = daddr;
	ip->tot_len = bpf_htons(sizeof(*ip) + udp_len);
	ip->check = ip_checksum(ip);
	udp->source = sport;
	udp->dest = dport;
	udp->len = bpf_htons(udp_len);
	udp->check = 0;
	return 0;
}

static __always_inline int expired(__u64 expires_ns)
{
	return bpf_ktime_get_ns() >= expires_ns;
}

/* The peer is another allocation's relayed address on this host (two relay-only parties of a call
 * on one server): when that allocation's channel back to this one is in the kernel too, both
 * rewrites at once, ChannelData in and ChannelData out, without a trip through lo. -1: not here. */
static __always_inline int relay_to_relay(struct __sk_buff *skb, struct to_peer_value *out,
					  __u16 length, __u16 udp_len)
{
	struct to_client_key key = {
		.peer_ip = out->relay_ip,
		.relay_ip = out->peer_ip,
		.peer_port = out->relay_port,
		.relay_port = out->peer_port,
	};
	struct to_client_value *in = bpf_map_lookup_elem(&to_client, &key);
	if (!in || expired(in->expires_ns))
		return -1;
	int local = 0;
	int ifindex = route(skb, in->server_ip, in->client_ip, sizeof(struct iphdr) + udp_len, &local);
	if (!ifindex)
		return -1;
	if (rewrite(skb, in->server_ip, in->client_ip, in->server_port, in->client_port, udp_len,
		    local))
		return TC_ACT_SHOT;
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	__u8 *header = data + sizeof(struct ethhdr) + sizeof(struct iphdr) + sizeof(struct udphdr);
	if ((void *)(header + 4) > end)
		return TC_ACT_SHOT;
	header[0] = in->channel >> 8; /* the length stays: the same payload */
	header[1] = in->channel & 0xff;
	__sync_fetch_and_add(&out->packets, 1);
	__sync_fetch_and_add(&out->bytes, length);
	__sync_fetch_and_add(&in->packets, 1);
	__sync_fetch_and_add(&in->bytes, length);
	count(STAT_FORWARDED);
	return send_on(ifindex, local);
}

/* client -> peer: strip the ChannelData header, send the payload from the relayed address */
static __always_inline int to_peer_path(struct __sk_buff *skb, struct to_peer_value *out,
					__u16 length, __u16 payload_len, __u16 udp_len)
{
	int local = 0;
	if (length + 4 != payload_len || expired(out->expires_ns)) {
		count(STAT_PASSED);
		return TC_ACT_OK;
	}
	__u32 saddr = out->relay_ip, daddr = out->peer_ip;
	__u16 sport = out->relay_port, dport = out->peer_port;
	int ifindex = route(skb, saddr, daddr, sizeof(struct iphdr) + udp_len - 4, &local);
	if (!ifindex && local == 2) {
		int chained = relay_to_relay(skb, out, length, udp_len);
		if (chained >= 0)
			return chained;
	}
	if (!ifindex) {
		count(STAT_PASSED);
		return TC_ACT_OK;
	}
	/* drop the 4 bytes after the IPv4 header (the old ports): the old length and checksum
	 * and the ChannelData header are where the new UDP header goes */
	if (bpf_skb_adjust_room(skb, -4, BPF_ADJ_ROOM_NET, 0))
		return TC_ACT_OK;
	if (rewrite(skb, saddr, daddr, sport, dport, udp_len - 4, local))
		return TC_ACT_SHOT; /* cannot happen: the datagram was checked longer */
	__sync_fetch_and_add(&out->packets, 1);
	__sync_fetch_and_add(&out->bytes, length);
	count(STAT_FORWARDED);
	return send_on(ifindex, local);
}

/* peer -> client: send the datagram's payload as ChannelData from the listener */
static __always_inline int to_client_path(struct __sk_buff *skb, struct to_client_value *in,
					  __u16 payload_len, __u16 udp_len)
{
	int local = 0;
	if (expired(in->expires_ns) || udp_len > 0xffff - sizeof(struct iphdr) - 4) {
		count(STAT_PASSED);
		return TC_ACT_OK;
	}
	__u32 saddr = in->server_ip, daddr = in->client_ip;
	__u16 sport = in->server_port, dport = in->client_port;
	__u16 number = in->channel;
	int ifindex = route(skb, saddr, daddr, sizeof(struct iphdr) + udp_len + 4, &local);
	if (!ifindex) {
		count(STAT_PASSED);
		return TC_ACT_OK;
	}
	/* 4 new bytes after the IPv4 header: the new UDP header goes over them and the old ports,
	 * the ChannelData header over the old length and checksum */
	if (bpf_skb_adjust_room(skb, 4, BPF_ADJ_ROOM_NET, 0))
		return TC_ACT_OK;
	if (rewrite(skb, saddr, daddr, sport, dport, udp_len + 4, local))
		return TC_ACT_SHOT;
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	__u8 *header = data + sizeof(struct ethhdr) + sizeof(struct iphdr) + sizeof(struct udphdr);
	if ((void *)(header + 4) > end)
		return TC_ACT_SHOT;
	header[0] = number >> 8;
	header[1] = number & 0xff;
	header[2] = payload_len >> 8;
	header[3] = payload_len & 0xff;
	__sync_fetch_and_add(&in->packets, 1);
	__sync_fetch_and_add(&in->bytes, payload_len);
	count(STAT_FORWARDED);
	return send_on(ifindex, local);
}

SEC("tc")
int relay_channel_data(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	struct udphdr *udp = (void *)ip + sizeof(*ip);
	__u8 *payload = (void *)(udp + 1);

	if ((void *)(payload + 4) > end)
		return TC_ACT_OK;
	if (eth->h_proto != bpf_htons(ETH_P_IP) || ip->ihl != 5 || ip->protocol != IPPROTO_UDP)
		return TC_ACT_OK;
	if (ip->frag_off & bpf_htons(0x3fff) || skb->gso_segs > 1)
		return TC_ACT_OK;
	__u16 udp_len = bpf_ntohs(udp->len);
	if (udp_len < sizeof(*udp) + 4 || sizeof(*ip) + udp_len != bpf_ntohs(ip->tot_len))
		return TC_ACT_OK;
	__u16 payload_len = udp_len - sizeof(*udp);

	/* ChannelData from a client on a bound channel, exactly one message in the datagram */
	__u16 channel = ((__u16)payload[0] << 8) | payload[1];
	if (channel >= CHANNEL_MIN && channel <= CHANNEL_MAX) {
		struct to_peer_key key = {
			.client_ip = ip->saddr,
			.server_ip = ip->daddr,
			.client_port = udp->source,
			.server_port = udp->dest,
			.channel = channel,
		};
		struct to_peer_value *out = bpf_map_lookup_elem(&to_peer, &key);
		if (out) {
			__u16 length = ((__u16)payload[2] << 8) | payload[3];
			return to_peer_path(skb, out, length, payload_len, udp_len);
		}
		/* else maybe a peer's datagram that only starts like ChannelData */
	}
	struct to_client_key back = {
		.peer_ip = ip->saddr,
		.relay_ip = ip->daddr,
		.peer_port = udp->source,
		.relay_port = udp->dest,
	};
	struct to_client_value *in = bpf_map_lookup_elem(&to_client, &back);
	if (!in)
		return TC_ACT_OK;
	return to_client_path(skb, in, payload_len, udp_len);
}

char LICENSE[] SEC("license") = "GPL";
