//go:build ignore

// weft's node collector: process exec/exit, TCP connections (IPv4 and IPv6)
// and unix-socket connections, one ring buffer out.
//
// Hooks are tracepoints only (tp_btf, syscalls): they are stable across
// kernels and need no kprobes. Cost is per connection, never per packet:
// byte totals are read from the tcp_sock's own RFC 4898 counters at close,
// and the owner of a socket (who connected or accepted it) is kept in a
// bounded LRU map until then.
//
// Every ring-buffer reserve failure is counted in the per-CPU `lost` map,
// which user space exports; a lost event is never invisible.

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define AF_UNIX 1
#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6

#define TASK_COMM_LEN 16
#define FILENAME_MAX 256
// ARGV_MAX bounds the argv bytes an exec event carries (a power of two).
#define ARGV_MAX 1024
#define UNIX_PATH_MAX 108

enum event_type {
	EVENT_EXEC = 1,
	EVENT_EXIT = 2,
	EVENT_TCP = 3,
	EVENT_UNIX = 4,
};

enum tcp_phase {
	TCP_PHASE_CONNECT = 1,
	TCP_PHASE_ACCEPT = 2,
	TCP_PHASE_CLOSE = 3,
	TCP_PHASE_CONNECT_FAILED = 4,
};

enum role {
	ROLE_CLIENT = 1,
	ROLE_SERVER = 2,
};

// task_hdr starts every event: when, and which task.
struct task_hdr {
	__u64 ts_ns; // CLOCK_MONOTONIC
	__u64 cgroup_id;
	__u32 type;
	__u32 pid; // thread group id
	__u32 tid;
	__u32 ppid;
	__u32 uid;
	__u32 _pad;
	char comm[TASK_COMM_LEN];
};

struct exec_event {
	struct task_hdr hdr;
	__u32 argv_len;
	__u8 argv_truncated;
	__u8 _pad[3];
	char filename[FILENAME_MAX];
	char argv[ARGV_MAX];
};

struct exit_event {
	struct task_hdr hdr;
	__u64 start_ns; // CLOCK_MONOTONIC start of the thread group
	__u32 exit_code; // wait status: code << 8 | signal
	__u32 _pad;
};

// conn is a connection's addresses. At close the kernel has already
// released the local port, so they are kept from connect/accept.
struct conn {
	__u32 netns;
	__u16 family;
	__u16 lport;
	__u16 rport;
	__u16 _pad;
	__u8 laddr[16];
	__u8 raddr[16];
};

struct tcp_event {
	struct task_hdr hdr;
	__u64 cookie;
	__u64 start_ns;
	__u64 bytes_sent;
	__u64 bytes_received;
	__s32 err;
	__u8 phase;
	__u8 role;
	__u8 _pad[2];
	struct conn conn;
};

struct unix_event {
	struct task_hdr hdr;
	__u64 sk;      // kernel identity of this end (hashed in user space)
	__u64 peer_sk; // and of the other end
	__u64 peer_cgroup_id;
	__u32 peer_pid;
	__u32 path_len; // bytes of path, sun_path[0]==0 for an abstract name
	__u16 sock_type;
	__u8 phase;
	__u8 role;
	__u8 _pad[4];
	char path[UNIX_PATH_MAX];
};

// owner is who a TCP socket belongs to, from connect/accept until close.
struct owner {
	struct task_hdr hdr;
	struct conn conn;
	__u64 start_ns;
	__u64 cookie;
	__u8 role;
	__u8 accepted; // server side: set once accept() returned it
	__u8 _pad[6];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20); // set by the loader
} events SEC(".maps");

// lost counts ring-buffer reserve failures per CPU.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} lost SEC(".maps");

// untracked counts, per CPU, TCP connections that closed without an
// owner in socks: opened before the collector attached, or evicted from
// the LRU by newer sockets. Their close events are not sent; user space
// exports the count so the gap is never invisible.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} untracked SEC(".maps");

// socks maps a TCP socket (its kernel address) to its owner.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536); // set by the loader
	__type(key, __u64);
	__type(value, struct owner);
} socks SEC(".maps");

// connect_fds carries the fd of a connect() from syscall entry to exit.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __s32);
} connect_fds SEC(".maps");

// Force the event types into BTF for bpf2go -type.
const struct exec_event *unused_exec __attribute__((unused));
const struct exit_event *unused_exit __attribute__((unused));
const struct tcp_event *unused_tcp __attribute__((unused));
const struct unix_event *unused_unix __attribute__((unused));

static __always_inline void count(void *percpu)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(percpu, &zero);
	if (n)
		*n += 1; // per-CPU: no atomics needed
}

// wakeup_bytes: the reader is woken only once this much data is waiting
// (it also wakes itself on a timer), so a busy node pays one wakeup per
// batch of events, not per event. Set by the loader; 0 wakes every time.
const volatile __u64 wakeup_bytes = 0;

static __always_inline void submit(void *e, __u64 size)
{
	__u64 flags = 0;
	if (wakeup_bytes > 0) {
		// Wake the reader once, when the backlog crosses the threshold;
		// a backlog already past it means the reader was woken and has
		// not caught up: waking it again per record only costs.
		__u64 avail = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
		flags = (avail >= wakeup_bytes && avail < wakeup_bytes + size + 8) ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
	}
	bpf_ringbuf_submit(e, flags);
}

static __always_inline void *reserve(__u64 size)
{
	void *e = bpf_ringbuf_reserve(&events, size, 0);
	if (!e)
		count(&lost);
	return e;
}

// Reads go straight through BTF-typed pointers where the verifier knows
// the type (tp_btf arguments, bpf_get_current_task_btf): a load each,
// with CO-RE relocations, instead of a bpf_probe_read_kernel call each.
// This is the hot path of every connection on the node.

static __always_inline void fill_current(struct task_hdr *h, __u32 type)
{
	__u64 pt = bpf_get_current_pid_tgid();
	struct task_struct *t = bpf_get_current_task_btf();

	h->ts_ns = bpf_ktime_get_ns();
	h->type = type;
	h->pid = pt >> 32;
	h->tid = (__u32)pt;
	h->uid = (__u32)bpf_get_current_uid_gid();
	h->cgroup_id = bpf_get_current_cgroup_id();
	h->ppid = t->real_parent->tgid;
	h->_pad = 0;
	bpf_get_current_comm(h->comm, sizeof(h->comm));
}

// ---- process ----

SEC("tp_btf/sched_process_exec")
int BPF_PROG(handle_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	struct exec_event *e = reserve(sizeof(*e));
	if (!e)
		return 0;
	fill_current(&e->hdr, EVENT_EXEC);
	bpf_probe_read_kernel_str(e->filename, sizeof(e->filename), BPF_CORE_READ(bprm, filename));

	struct mm_struct *mm = BPF_CORE_READ(p, mm);
	unsigned long start = BPF_CORE_READ(mm, arg_start);
	unsigned long end = BPF_CORE_READ(mm, arg_end);
	__u64 len = end > start ? end - start : 0;
	e->argv_truncated = 0;
	if (len > ARGV_MAX) {
		len = ARGV_MAX;
		e->argv_truncated = 1;
	}
	barrier_var(len);
	if (len > ARGV_MAX)
		len = ARGV_MAX;
	if (len > 0 && bpf_probe_read_user(e->argv, len, (void *)start) != 0)
		len = 0;
	e->argv_len = len;
	submit(e, sizeof(*e));
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(handle_exit, struct task_struct *p)
{
	// Report the thread group once, when its last thread exits: signal->live
	// reached zero in do_exit before this tracepoint.
	if (BPF_CORE_READ(p, signal, live.counter) != 0)
		return 0;
	struct exit_event *e = reserve(sizeof(*e));
	if (!e)
		return 0;
	fill_current(&e->hdr, EVENT_EXIT);
	e->start_ns = BPF_CORE_READ(p, group_leader, start_time);
	e->exit_code = BPF_CORE_READ(p, exit_code);
	e->_pad = 0;
	submit(e, sizeof(*e));
	return 0;
}

// ---- TCP ----

// read_conn_btf reads a connection's addresses through a BTF pointer.
static __always_inline void read_conn_btf(struct conn *c, const struct sock *sk)
{
	__u16 family = sk->__sk_common.skc_family;
	c->family = family;
	c->lport = sk->__sk_common.skc_num;
	c->rport = bpf_ntohs(sk->__sk_common.skc_dport);
	c->netns = sk->__sk_common.skc_net.net->ns.inum;
	c->_pad = 0;
	__builtin_memset(c->laddr, 0, sizeof(c->laddr));
	__builtin_memset(c->raddr, 0, sizeof(c->raddr));
	if (family == AF_INET) {
		*(__u32 *)c->laddr = sk->__sk_common.skc_rcv_saddr;
		*(__u32 *)c->raddr = sk->__sk_common.skc_daddr;
	} else {
		bpf_core_read(c->laddr, 16, &sk->__sk_common.skc_v6_rcv_saddr);
		bpf_core_read(c->raddr, 16, &sk->__sk_common.skc_v6_daddr);
	}
}

// read_conn reads them through an untyped pointer (from an fd).
static __always_inline void read_conn(struct conn *c, const struct sock *sk)
{
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	c->family = family;
	c->lport = BPF_CORE_READ(sk, __sk_common.skc_num);
	c->rport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	c->netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	c->_pad = 0;
	__builtin_memset(c->laddr, 0, sizeof(c->laddr));
	__builtin_memset(c->raddr, 0, sizeof(c->raddr));
	if (family == AF_INET) {
		bpf_core_read(c->laddr, 4, &sk->__sk_common.skc_rcv_saddr);
		bpf_core_read(c->raddr, 4, &sk->__sk_common.skc_daddr);
	} else {
		bpf_core_read(c->laddr, 16, &sk->__sk_common.skc_v6_rcv_saddr);
		bpf_core_read(c->raddr, 16, &sk->__sk_common.skc_v6_daddr);
	}
}

#define SEND_SHUTDOWN 2

// data_bytes turns the tcp_sock's RFC 4898 counters into the bytes the
// application exchanged: bytes_acked counts a client's SYN and an acked
// FIN, bytes_received a received FIN, one sequence number each.
static __always_inline void data_bytes(const struct sock *sk, struct owner *o, int oldstate, __u64 *sent, __u64 *received)
{
	struct tcp_sock *tp = bpf_skc_to_tcp_sock((void *)sk);
	if (!tp)
		return;
	__u64 acked = tp->bytes_acked;
	__u64 recv = tp->bytes_received;
	if (o->role == ROLE_CLIENT && acked > 0)
		acked--; // SYN
	__u8 shut = sk->sk_shutdown;
	// A FIN was sent and acked: the close came after one (not an abort
	// from ESTABLISHED/CLOSE_WAIT) and nothing is left unacked.
	if ((shut & SEND_SHUTDOWN) && oldstate != TCP_ESTABLISHED && oldstate != TCP_CLOSE_WAIT &&
	    tp->snd_una == tp->write_seq && acked > 0)
		acked--;
	unsigned long flags = sk->__sk_common.skc_flags;
	if ((flags & (1UL << bpf_core_enum_value(enum sock_flags, SOCK_DONE))) && recv > 0)
		recv--; // the peer's FIN
	*sent = acked;
	*received = recv;
}

// emit_tcp sends a TCP event of o; sk (a BTF pointer) is only read at close.
static __always_inline void emit_tcp(const struct sock *sk, struct owner *o, __u8 phase, __s32 err, __u64 now, int oldstate)
{
	struct tcp_event *e = reserve(sizeof(*e));
	if (!e)
		return;
	e->hdr = o->hdr;
	e->hdr.type = EVENT_TCP;
	e->hdr.ts_ns = now;
	e->cookie = o->cookie;
	e->start_ns = o->start_ns;
	e->phase = phase;
	e->role = o->role;
	e->err = err;
	e->_pad[0] = 0;
	e->_pad[1] = 0;
	e->bytes_sent = 0;
	e->bytes_received = 0;
	if (phase == TCP_PHASE_CLOSE)
		data_bytes(sk, o, oldstate, &e->bytes_sent, &e->bytes_received);
	e->conn = o->conn;
	submit(e, sizeof(*e));
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(handle_set_state, const struct sock *sk, const int oldstate, const int newstate)
{
	// Only these transitions matter; every other one returns before a
	// map is touched.
	int connecting = newstate == TCP_SYN_SENT;
	int established = newstate == TCP_ESTABLISHED && (oldstate == TCP_SYN_SENT || oldstate == TCP_SYN_RECV);
	if (!connecting && !established && newstate != TCP_CLOSE)
		return 0;
	if (sk->sk_protocol != IPPROTO_TCP)
		return 0;
	__u16 family = sk->__sk_common.skc_family;
	if (family != AF_INET && family != AF_INET6)
		return 0;
	__u64 key = (__u64)sk;
	__u64 now = bpf_ktime_get_ns();

	if (connecting) {
		// connect(): process context, the caller owns the socket.
		struct owner o = {};
		fill_current(&o.hdr, EVENT_TCP);
		o.start_ns = now;
		o.role = ROLE_CLIENT;
		bpf_map_update_elem(&socks, &key, &o, BPF_ANY);
		return 0;
	}
	if (established && oldstate == TCP_SYN_RECV) {
		// A server-side child: its owner is known at accept(); its
		// addresses and cookie are read now, cheaply, through BTF.
		struct owner o = {};
		o.start_ns = now;
		o.role = ROLE_SERVER;
		o.cookie = bpf_get_socket_cookie((void *)sk);
		read_conn_btf(&o.conn, sk);
		if (bpf_map_update_elem(&socks, &key, &o, BPF_NOEXIST) != 0) {
			// Accepted already (TCP Fast Open hands the socket to
			// accept() before the handshake ends): keep its owner.
			struct owner *ex = bpf_map_lookup_elem(&socks, &key);
			if (ex) {
				ex->cookie = o.cookie;
				ex->conn = o.conn;
			}
		}
		return 0;
	}

	struct owner *o = bpf_map_lookup_elem(&socks, &key);
	if (!o) {
		// A connection closing that was never seen open (a listener or a
		// child that never completed its handshake is not one).
		if (newstate == TCP_CLOSE && oldstate != TCP_LISTEN && oldstate != TCP_SYN_RECV && oldstate != TCP_CLOSE)
			count(&untracked);
		return 0;
	}
	if (established) {
		o->start_ns = now;
		o->cookie = bpf_get_socket_cookie((void *)sk);
		read_conn_btf(&o->conn, sk);
		emit_tcp(sk, o, TCP_PHASE_CONNECT, 0, now, oldstate);
		return 0;
	}
	// newstate == TCP_CLOSE
	if (oldstate == TCP_SYN_SENT) {
		__s32 err = sk->sk_err;
		if (!err)
			err = sk->sk_err_soft;
		// The port is released already: the remote end is what is known.
		o->cookie = bpf_get_socket_cookie((void *)sk);
		read_conn_btf(&o->conn, sk);
		emit_tcp(sk, o, TCP_PHASE_CONNECT_FAILED, err, now, oldstate);
	} else if (o->role == ROLE_CLIENT || o->accepted) {
		if (!o->cookie) // accepted before attach: its cookie is made now
			o->cookie = bpf_get_socket_cookie((void *)sk);
		emit_tcp(sk, o, TCP_PHASE_CLOSE, 0, now, oldstate);
	}
	bpf_map_delete_elem(&socks, &key);
	return 0;
}

// sock_from_fd returns the sock behind fd in the current task, or NULL.
static __always_inline struct sock *sock_from_fd(int fd)
{
	struct task_struct *t = bpf_get_current_task_btf();
	struct fdtable *fdt = t->files->fdt;
	if (fd < 0 || (unsigned int)fd >= fdt->max_fds)
		return NULL;
	struct file **fds = fdt->fd;
	struct file *f = NULL;
	bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]);
	if (!f)
		return NULL;
	struct socket *sock = BPF_CORE_READ(f, private_data);
	// Only a socket's file points at a socket that points back at it.
	if (!sock || BPF_CORE_READ(sock, file) != f)
		return NULL;
	return BPF_CORE_READ(sock, sk);
}

// ---- unix ----

// pid_task_cgroup returns the cgroup id of the thread group leader of pid.
static __always_inline __u64 pid_cgroup(struct pid *pid)
{
	if (!pid)
		return 0;
	struct hlist_node *first = BPF_CORE_READ(pid, tasks[PIDTYPE_TGID].first);
	if (!first)
		return 0;
	struct task_struct *t = (void *)first - bpf_core_field_offset(struct task_struct, pid_links[PIDTYPE_TGID]);
	return BPF_CORE_READ(t, cgroups, dfl_cgrp, kn, id);
}

static __always_inline void emit_unix(struct sock *sk, __u8 phase, __u8 role)
{
	struct unix_sock *us = (struct unix_sock *)sk;
	struct sock *peer = BPF_CORE_READ(us, peer);
	// The connected end of a client has no address; the path is the
	// server's, which the peer (server-side) socket carries.
	struct unix_address *addr = BPF_CORE_READ(us, addr);
	if (!addr && peer)
		addr = BPF_CORE_READ((struct unix_sock *)peer, addr);

	struct unix_event *e = reserve(sizeof(*e));
	if (!e)
		return;
	fill_current(&e->hdr, EVENT_UNIX);
	e->sk = (__u64)sk;
	e->peer_sk = (__u64)peer;
	e->phase = phase;
	e->role = role;
	e->sock_type = BPF_CORE_READ(sk, sk_type);
	struct pid *ppid = BPF_CORE_READ(sk, sk_peer_pid);
	e->peer_pid = ppid ? BPF_CORE_READ(ppid, numbers[0].nr) : 0;
	e->peer_cgroup_id = pid_cgroup(ppid);
	e->path_len = 0;
	__builtin_memset(e->_pad, 0, sizeof(e->_pad));
	if (addr) {
		int len = BPF_CORE_READ(addr, len) - 2; // minus sun_family
		if (len < 0)
			len = 0;
		if (len > UNIX_PATH_MAX)
			len = UNIX_PATH_MAX;
		e->path_len = len;
		bpf_probe_read_kernel(e->path, sizeof(e->path), &addr->name[0].sun_path);
	}
	submit(e, sizeof(*e));
}

SEC("tracepoint/syscalls/sys_enter_connect")
int handle_connect_enter(struct trace_event_raw_sys_enter *ctx)
{
	// Only unix-socket connects are followed here (TCP has its own
	// tracepoint): check the address family before touching the map.
	__u16 family = 0;
	if (bpf_probe_read_user(&family, sizeof(family), (void *)ctx->args[1]) != 0 || family != AF_UNIX)
		return 0;
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__s32 fd = (__s32)ctx->args[0];
	bpf_map_update_elem(&connect_fds, &tid, &fd, BPF_ANY);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_connect")
int handle_connect_exit(struct trace_event_raw_sys_exit *ctx)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__s32 *fdp = bpf_map_lookup_elem(&connect_fds, &tid);
	if (!fdp)
		return 0;
	__s32 fd = *fdp;
	bpf_map_delete_elem(&connect_fds, &tid);
	if (ctx->ret != 0)
		return 0;
	struct sock *sk = sock_from_fd(fd);
	if (!sk || BPF_CORE_READ(sk, __sk_common.skc_family) != AF_UNIX)
		return 0;
	emit_unix(sk, TCP_PHASE_CONNECT, ROLE_CLIENT);
	return 0;
}

static __always_inline int on_accept(long ret)
{
	if (ret < 0)
		return 0;
	struct sock *sk = sock_from_fd((int)ret);
	if (!sk)
		return 0;
	__u64 key = (__u64)sk;
	__u64 now = bpf_ktime_get_ns();
	// A TCP child is in socks since its handshake; anything else is
	// looked at closer only when it is not.
	struct owner *o = bpf_map_lookup_elem(&socks, &key);
	if (!o) {
		__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
		if (family == AF_UNIX) {
			emit_unix(sk, TCP_PHASE_ACCEPT, ROLE_SERVER);
			return 0;
		}
		if ((family != AF_INET && family != AF_INET6) || BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
			return 0;
		// Established before the collector attached, or evicted.
		struct owner fresh = {};
		fresh.start_ns = now;
		fresh.role = ROLE_SERVER;
		fresh.cookie = BPF_CORE_READ(sk, __sk_common.skc_cookie.counter);
		read_conn(&fresh.conn, sk);
		bpf_map_update_elem(&socks, &key, &fresh, BPF_NOEXIST);
		o = bpf_map_lookup_elem(&socks, &key);
		if (!o)
			return 0;
	}
	fill_current(&o->hdr, EVENT_TCP);
	o->accepted = 1;
	// A connection established before the collector attached has no
	// cookie yet (the kernel makes one on first request, which this
	// program type cannot make): its close, which can, reports it.
	if (o->cookie)
		emit_tcp(sk, o, TCP_PHASE_ACCEPT, 0, now, TCP_ESTABLISHED);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int handle_accept4_exit(struct trace_event_raw_sys_exit *ctx)
{
	return on_accept(ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_accept")
int handle_accept_exit(struct trace_event_raw_sys_exit *ctx)
{
	return on_accept(ctx->ret);
}
