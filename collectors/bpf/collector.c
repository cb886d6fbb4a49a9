//go:build ignore

// weft's node collector: process exec/exit, TCP connections (IPv4 and IPv6)
// and unix-socket connections, one ring buffer out.
//
// Hooks are BTF tracepoints only (tp_btf), plus iterators (two run once at
// start, one, the sweep, every so often): stable across kernels, no kprobes, and no syscall tracepoints —
// attaching any of those puts every system call of every task on the
// node on the kernel's slow path, which costs more than everything else
// here together. Cost is per connection, never per packet: byte totals
// are read from the tcp_sock's own RFC 4898 counters at close, and the
// owner of a socket is kept in a bounded LRU map until then. Each side of
// a connection is one ring-buffer record, its close, which user space
// publishes as the connect/accept and the close; a connection that stays
// open longer than a while has its connect/accept sent by a sweep of that
// map while it is open, and, on the sweep's progress passes, its byte
// totals so far whenever they changed (see sweep_socks).
//
// Who owns a socket:
//   - a TCP client: the task that connect()s (the SYN_SENT transition
//     runs in its context);
//   - a TCP server side: the task that listen()ed on its port (the
//     LISTEN transition runs in its context), recorded per listening
//     address; the child socket is the listener's clone and carries its
//     cgroup, which stands in when the listener predates the collector
//     and the start-up scan did not see it;
//   - a unix connection: both ends at once, when the connecting task
//     queues its new connection on the listener (sk_data_ready).
//
// Every ring-buffer reserve failure of a hook is counted in the per-CPU
// `lost` map, which user space exports; a lost event is never invisible.
// (A lost TCP close is its connection side's close and, unless the sweep
// sent it, its connect/accept. The sweep loses nothing: what it cannot
// send now is sent later, and counted meanwhile.)

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

// One source, two objects (gen.go): the default for kernels with BPF
// atomics (5.12+), and WEFT_LEGACY for older ones (5.10, 5.11), which lack
// atomics, bpf_get_current_task_btf, bpf_sock_from_file and socket cookies
// in tracing programs: the legacy object reads through
// bpf_probe_read_kernel (CO-RE) what the default reads by BTF pointer, and
// claims without atomics (a connect/accept racing its close between the
// sweep and the close may then be sent twice; the correlator keeps one).

// bpf_rdonly_cast reads an object as another BTF type; the verifier
// replaces the call with a move (no call at run time). Linux 6.2+: where
// the kernel lacks it, the loader clears have_rdonly_cast and the same
// fields are read with bpf_probe_read_kernel.
extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym __weak;
#ifdef WEFT_LEGACY
#define have_rdonly_cast 0
#else
const volatile __u8 have_rdonly_cast = 1;
#endif

// DIRECT(p, a, b, ...) is p->a->b...: a load each through a BTF pointer;
// BPF_CORE_READ(p, a, b, ...) reads the same through any pointer.
#define DIRECT1(p, a) ((p)->a)
#define DIRECT2(p, a, b) ((p)->a->b)
#define DIRECT3(p, a, b, c) ((p)->a->b->c)
#define DIRECT4(p, a, b, c, d) ((p)->a->b->c->d)
#define DIRECT_N(_1, _2, _3, _4, NAME, ...) NAME
#define DIRECT(p, ...) DIRECT_N(__VA_ARGS__, DIRECT4, DIRECT3, DIRECT2, DIRECT1)(p, __VA_ARGS__)

// AS(type, p) is p as a BTF pointer to a kernel type (have_rdonly_cast).
#define AS(type, p) ((type *)bpf_rdonly_cast((void *)(p), bpf_core_type_id_kernel(type)))
// TCP_RD(sk, f) and INET_RD(sk, f) read a field of the tcp_sock or
// inet_sock that sk (a struct sock) is.
#define TCP_RD(sk, f) (have_rdonly_cast ? AS(struct tcp_sock, sk)->f : BPF_CORE_READ((struct tcp_sock *)(sk), f))
#define INET_RD(sk, f) (have_rdonly_cast ? AS(struct inet_sock, sk)->f : BPF_CORE_READ((struct inet_sock *)(sk), f))

#define AF_UNIX 1
#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define IPPROTO_MPTCP 262

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
	TCP_PHASE_PROGRESS = 5,
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

// conn is a connection's addresses, read from the socket when it is
// reported (at close, the source port from inet_sport: the kernel has
// released the local port, skc_num, by then).
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
	// prior_sent/received, on a progress or a close: the totals of the
	// side's previous progress record (0 when none).
	__u64 prior_sent;
	__u64 prior_received;
	__s32 err;
	__u8 phase;
	__u8 role;
	// open_sent, on a close: the sweep sent this connection's
	// connect/accept before. When 0 the close stands for both, and user
	// space publishes the connect/accept (at start_ns) before it.
	__u8 open_sent;
	__u8 _pad;
	struct conn conn;
};

struct unix_event {
	struct task_hdr hdr;
	__u64 sk;      // this end's socket inode number (ss -x)
	__u64 peer_sk; // the listener's
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
// The connection's addresses are read from the socket when it is
// reported. unsent holds the cookie until the connect/accept is reported:
// whoever reports it first takes it (atomically), the sweep or the close,
// which then stands for both. Holding the cookie, not a flag, lets the
// sweep claim only the connection it read: an LRU element is reused at
// once when freed, even while an iterator looks at it.
struct owner {
	struct task_hdr hdr;
	__u64 start_ns;
	__u64 cookie;
	__u64 unsent;
	// rep_sent/received: the totals the last progress record carried.
	__u64 rep_sent;
	__u64 rep_received;
	__u8 role;
	__u8 _pad[7];
};

// listen_key is a listening TCP address; addr is all zero for a wildcard
// (family tells 0.0.0.0 from [::], which another task may hold).
struct listen_key {
	__u32 netns;
	__u16 port;
	__u16 family;
	__u8 addr[16];
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

// untracked counts, per CPU, the gaps in what the TCP hooks know; user
// space exports them so no gap is invisible:
//   UNTRACKED_CLOSE: connections that closed without an owner in socks
//     (opened before the collector attached, or evicted from the LRU by
//     newer sockets); their close is not sent, nor their connect/accept
//     unless the sweep sent it;
//   UNOWNED_ACCEPT: server-side connections whose listener is not known
//     (it listen()ed without bind(), or was evicted from listeners); sent
//     with the socket's cgroup and no process;
//   UNIX_UNMATCHED: unix connections whose client socket was not found
//     among the newest on the listener's queue (accepted before the hook
//     ran, or more than four connects raced in behind it); sent under a
//     one-off id.
// and SWEEP_DEFERRED: connect/accepts the sweep left for a later pass (the
// ring buffer was half full); not a gap, counted so SweepAll can repeat;
// PROGRESS_DEFERRED: progress records left for a later pass (the next
// one carries the totals then, from the same prior: nothing is lost).
#define UNTRACKED_CLOSE 0
#define UNOWNED_ACCEPT 1
#define UNIX_UNMATCHED 2
#define SWEEP_DEFERRED 3
#define PROGRESS_DEFERRED 4
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 5);
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

// listener is who listen()ed on an address, and on which socket; prev is
// the one it displaced, still listening there (SO_REUSEPORT) or about to
// fail (a second listen() that gets EADDRINUSE passes through LISTEN
// first): it is restored when the newer one closes.
struct weft_listener {
	struct task_hdr hdr;
	__u64 sk;
	struct task_hdr prev_hdr;
	__u64 prev_sk;
};

// listeners maps a listening TCP address to the task that listen()ed on
// it: the owner of the connections it accepts.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct listen_key);
	__type(value, struct weft_listener);
} listeners SEC(".maps");

// listener_keys maps a listening socket to its key in listeners: at close
// its port may be released already, and only the socket that made an
// entry may remove it (SO_REUSEPORT: others may listen there too).
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct listen_key);
} listener_keys SEC(".maps");

// claimed holds the queued unix connections already reported (server-side
// socket, and the client socket's inode, so a reused address is a new
// key), so that threads of one process connecting to one listener at
// once report each connection once: the insert (BPF_NOEXIST) is the
// claim, and only one of two racing threads can make it. Which thread
// names which of the process's connections may be swapped (same process,
// same attribution; tid and comm may differ).
struct claim {
	__u64 sk;
	__u64 ino;
};
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct claim);
	__type(value, __u8);
} claimed SEC(".maps");

// scan_phase tells scan_files which pass it runs: 0 listeners, 1
// connections (set by user space between the runs).
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} scan_phase SEC(".maps");

// Force the event types into BTF for bpf2go -type.
const struct exec_event *unused_exec __attribute__((unused));
const struct exit_event *unused_exit __attribute__((unused));
const struct tcp_event *unused_tcp __attribute__((unused));
const struct unix_event *unused_unix __attribute__((unused));

static __always_inline void count(void *percpu, __u32 slot)
{
	__u64 *n = bpf_map_lookup_elem(percpu, &slot);
	if (n)
		*n += 1; // per-CPU: no atomics needed
}

// pending counts, per CPU, the bytes submitted since this CPU last woke
// the reader.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} pending SEC(".maps");

// wakeup_bytes: each CPU wakes the reader once it has submitted this much
// since its last wakeup (the reader also wakes itself on a timer), so a
// busy node pays one wakeup per batch of events, not per event. Counted
// per CPU in an inlined array slot rather than by asking the ring for its
// backlog: one helper call less per event. Set by the loader; 0 wakes
// every time.
const volatile __u64 wakeup_bytes = 0;

static __always_inline void submit(void *e, __u64 size)
{
	__u64 flags = 0;
	if (wakeup_bytes > 0) {
		__u32 zero = 0;
		__u64 *n = bpf_map_lookup_elem(&pending, &zero);
		flags = BPF_RB_NO_WAKEUP;
		if (n) {
			*n += size;
			if (*n >= wakeup_bytes) {
				*n = 0;
				flags = BPF_RB_FORCE_WAKEUP;
			}
		}
	}
	bpf_ringbuf_submit(e, flags);
}

static __always_inline void *reserve(__u64 size)
{
	void *e = bpf_ringbuf_reserve(&events, size, 0);
	if (!e)
		count(&lost, 0);
	return e;
}

// Reads go straight through BTF-typed pointers where the verifier knows
// the type (tp_btf arguments, bpf_get_current_task_btf): a load each,
// with CO-RE relocations, instead of a bpf_probe_read_kernel call each.
// This is the hot path of every connection on the node.

// FILL_TASK fills h from task t as an event of type, reading with RD.
#define FILL_TASK(h, t, type_, now, RD)                                      \
	do {                                                                 \
		(h)->ts_ns = (now);                                          \
		(h)->type = (type_);                                         \
		(h)->pid = RD(t, tgid);                                      \
		(h)->tid = RD(t, pid);                                       \
		(h)->uid = RD(t, cred, uid.val);                             \
		(h)->cgroup_id = RD(t, cgroups, dfl_cgrp, kn, id);           \
		(h)->ppid = RD(t, real_parent, tgid);                        \
		(h)->_pad = 0;                                               \
	} while (0)

// fill_task fills h from task t (a BTF pointer) as an event of type.
static __always_inline void fill_task(struct task_hdr *h, struct task_struct *t, __u32 type, __u64 now)
{
	// Loads, not helpers: on this hot path every helper call costs a
	// call and a return (with return-thunk mitigations, most of a
	// helper's price); the BTF pointer reads the same fields directly.
	FILL_TASK(h, t, type, now, DIRECT);
	__builtin_memcpy(h->comm, t->comm, sizeof(h->comm));
}

static __always_inline void fill_current(struct task_hdr *h, __u32 type, __u64 now)
{
#ifdef WEFT_LEGACY
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	FILL_TASK(h, t, type, now, BPF_CORE_READ);
	bpf_get_current_comm(h->comm, sizeof(h->comm));
#else
	fill_task(h, bpf_get_current_task_btf(), type, now);
#endif
}

// ---- process ----

SEC("tp_btf/sched_process_exec")
int BPF_PROG(handle_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	struct exec_event *e = reserve(sizeof(*e));
	if (!e)
		return 0;
	fill_current(&e->hdr, EVENT_EXEC, bpf_ktime_get_ns());
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
	fill_current(&e->hdr, EVENT_EXIT, bpf_ktime_get_ns());
	e->start_ns = BPF_CORE_READ(p, group_leader, start_time);
	e->exit_code = BPF_CORE_READ(p, exit_code);
	e->_pad = 0;
	submit(e, sizeof(*e));
	return 0;
}

// ---- TCP ----

// A socket's cookie is its identity for its lifetime (SO_COOKIE). The
// kernel makes it on first demand: bpf_get_socket_cookie makes it, but
// only takes a socket pointer the verifier trusts, which a socket reached
// through a task's files is not on every kernel (6.18 refuses it). Such a
// socket's cookie is read as it is and, if none was made yet, its
// address stands in: the kernel's cookies count up from 1 and never reach
// bit 63, which every kernel address has (SYNTH_COOKIE), and the socket
// keeps its address for its lifetime.
#define SYNTH_COOKIE (1ULL << 63)

#define SCANNED_COOKIE(sk, RD)                                               \
	({                                                                   \
		__u64 c_ = RD(sk, __sk_common.skc_cookie.counter);           \
		c_ ? c_ : (__u64)(sk);                                       \
	})

// live_cookie is the cookie of sk, a socket a hook's arguments give.
static __always_inline __u64 live_cookie(const struct sock *sk)
{
#ifdef WEFT_LEGACY
	return SCANNED_COOKIE(sk, DIRECT);
#else
	return bpf_get_socket_cookie((void *)sk);
#endif
}

// same_socket tells whether an entry made with cookie is the socket whose
// cookie counter reads now. A stand-in (the address) always matches: the
// cookie may have been made since (ss, SO_COOKIE), and a stale entry of a
// socket once at the same address cannot be told apart anyway.
static __always_inline int same_socket(__u64 cookie, __u64 now)
{
	return cookie == now || (cookie & SYNTH_COOKIE);
}


// READ_CONN reads a connection's addresses from sk with RD.
#define READ_CONN(c, sk, RD)                                                           \
	do {                                                                           \
		__u16 family = RD(sk, __sk_common.skc_family);                         \
		(c)->family = family;                                                  \
		(c)->lport = RD(sk, __sk_common.skc_num);                              \
		(c)->rport = bpf_ntohs(RD(sk, __sk_common.skc_dport));                 \
		(c)->netns = RD(sk, __sk_common.skc_net.net, ns.inum);                 \
		(c)->_pad = 0;                                                         \
		__builtin_memset((c)->laddr, 0, sizeof((c)->laddr));                   \
		__builtin_memset((c)->raddr, 0, sizeof((c)->raddr));                   \
		if (family == AF_INET) {                                               \
			*(__u32 *)(c)->laddr = RD(sk, __sk_common.skc_rcv_saddr);      \
			*(__u32 *)(c)->raddr = RD(sk, __sk_common.skc_daddr);          \
		} else {                                                               \
			bpf_core_read((c)->laddr, 16, &(sk)->__sk_common.skc_v6_rcv_saddr); \
			bpf_core_read((c)->raddr, 16, &(sk)->__sk_common.skc_v6_daddr);     \
		}                                                                      \
	} while (0)

// read_conn_btf reads a connection's addresses through a BTF pointer.
static __always_inline void read_conn_btf(struct conn *c, const struct sock *sk)
{
	READ_CONN(c, sk, DIRECT);
}

// read_conn_core reads them through any pointer (bpf_probe_read_kernel).
static __always_inline void read_conn_core(struct conn *c, const struct sock *sk)
{
	READ_CONN(c, sk, BPF_CORE_READ);
}

#define SEND_SHUTDOWN 2

// data_bytes turns the tcp_sock's RFC 4898 counters into the bytes the
// application exchanged: bytes_acked counts a client's SYN and an acked
// FIN, bytes_received a received FIN, one sequence number each.
static __always_inline void data_bytes(const struct sock *sk, struct owner *o, int oldstate, __u64 *sent, __u64 *received)
{
	// A TCP socket (the caller checked sk_protocol): cast, not a helper.
	__u64 acked = TCP_RD(sk, bytes_acked);
	__u64 recv = TCP_RD(sk, bytes_received);
	if (o->role == ROLE_CLIENT && acked > 0)
		acked--; // SYN
	__u8 shut = sk->sk_shutdown;
	// A FIN was sent and acked: the close came after one (not an abort
	// from ESTABLISHED/CLOSE_WAIT) and nothing is left unacked.
	if ((shut & SEND_SHUTDOWN) && oldstate != TCP_ESTABLISHED && oldstate != TCP_CLOSE_WAIT &&
	    TCP_RD(sk, snd_una) == TCP_RD(sk, write_seq) && acked > 0)
		acked--;
	unsigned long flags = sk->__sk_common.skc_flags;
	if ((flags & (1UL << bpf_core_enum_value(enum sock_flags, SOCK_DONE))) && recv > 0)
		recv--; // the peer's FIN
	*sent = acked;
	*received = recv;
}

// fill_tcp fills e, a TCP event of o on socket sk (a BTF pointer), with
// the connection's addresses read from sk: at close the kernel has
// released the local port (skc_num is 0), but the source port the
// connection used (inet_sport) and the addresses stay. The byte counts
// are read at close only.
static __always_inline void fill_tcp_hdr(struct tcp_event *e, struct owner *o, __u8 phase, __s32 err, __u64 now, __u8 open_sent)
{
	e->hdr = o->hdr;
	e->hdr.type = EVENT_TCP;
	e->hdr.ts_ns = now;
	e->cookie = o->cookie;
	e->start_ns = o->start_ns;
	e->phase = phase;
	e->role = o->role;
	e->err = err;
	e->open_sent = open_sent;
	e->_pad = 0;
	e->bytes_sent = 0;
	e->bytes_received = 0;
	e->prior_sent = o->rep_sent;
	e->prior_received = o->rep_received;
}

static __always_inline void fill_tcp(struct tcp_event *e, const struct sock *sk, struct owner *o, __u8 phase, __s32 err, __u64 now, int oldstate, __u8 open_sent)
{
	fill_tcp_hdr(e, o, phase, err, now, open_sent);
	if (phase == TCP_PHASE_CLOSE)
		data_bytes(sk, o, oldstate, &e->bytes_sent, &e->bytes_received);
	read_conn_btf(&e->conn, sk);
	e->conn.lport = bpf_ntohs(INET_RD(sk, inet_sport));
}

// emit_tcp sends a TCP event of o, on sk (a BTF pointer).
static __always_inline void emit_tcp(const struct sock *sk, struct owner *o, __u8 phase, __s32 err, __u64 now, int oldstate, __u8 open_sent)
{
	struct tcp_event *e = reserve(sizeof(*e));
	if (!e)
		return;
	fill_tcp(e, sk, o, phase, err, now, oldstate, open_sent);
	submit(e, sizeof(*e));
}

// sk_cgroup_id is the cgroup v2 id of the task that created sk (a child
// socket inherits its listener's).
static __always_inline __u64 sk_cgroup_id(const struct sock *sk)
{
	struct cgroup *cg = sk->sk_cgrp_data.cgroup;
	if (!cg)
		return 0;
	return cg->kn->id;
}

// listen_key_of fills k with sk's listening address.
static __always_inline void listen_key_of(struct listen_key *k, const struct conn *c)
{
	k->netns = c->netns;
	k->port = c->lport;
	k->family = c->family;
	__builtin_memcpy(k->addr, c->laddr, sizeof(k->addr));
}

// listener_of returns the owner of the listener that accepted a child
// with local address c: the exact address first, then the wildcard.
static __always_inline struct task_hdr *listener_of(const struct conn *c)
{
	struct listen_key k;
	listen_key_of(&k, c);
	struct weft_listener *l = bpf_map_lookup_elem(&listeners, &k);
	if (!l) {
		__builtin_memset(k.addr, 0, sizeof(k.addr));
		l = bpf_map_lookup_elem(&listeners, &k);
	}
	return l ? &l->hdr : NULL;
}

// add_listener records sk, listening on c, as owned by h. A live hook
// (flags BPF_ANY) displaces the entry there into prev; the start-up scan
// (BPF_NOEXIST) never displaces one.
static __always_inline void add_listener(const struct sock *sk, const struct conn *c, const struct task_hdr *h, __u64 flags)
{
	struct listen_key k;
	listen_key_of(&k, c);
	struct weft_listener l = {.hdr = *h, .sk = (__u64)sk};
	struct weft_listener *old = bpf_map_lookup_elem(&listeners, &k);
	if (old) {
		if (flags == BPF_NOEXIST)
			return;
		if (old->sk != (__u64)sk) {
			l.prev_hdr = old->hdr;
			l.prev_sk = old->sk;
		}
	}
	if (bpf_map_update_elem(&listeners, &k, &l, BPF_ANY) == 0) {
		__u64 key = (__u64)sk;
		bpf_map_update_elem(&listener_keys, &key, &k, BPF_ANY);
	}
}

// remove_listener forgets sk, a listener closing (or failing to listen):
// the entry it made goes back to the one it displaced, if any. With none,
// the entry stays: other SO_REUSEPORT listeners of the same service may
// still be there (more than two are not all remembered), and a new
// listen() there replaces it. The entry is rewritten whole (update, not a
// store into the value) so a concurrent reader never sees half of it.
static __always_inline void remove_listener(const struct sock *sk)
{
	__u64 key = (__u64)sk;
	struct listen_key *kp = bpf_map_lookup_elem(&listener_keys, &key);
	if (!kp)
		return;
	struct listen_key k = *kp;
	bpf_map_delete_elem(&listener_keys, &key);
	struct weft_listener *l = bpf_map_lookup_elem(&listeners, &k);
	if (!l)
		return;
	struct weft_listener n = *l;
	if (n.sk == key && n.prev_sk) {
		n.hdr = n.prev_hdr;
		n.sk = n.prev_sk;
	} else if (n.prev_sk != key) {
		return;
	}
	n.prev_sk = 0;
	bpf_map_update_elem(&listeners, &k, &n, BPF_EXIST);
}

// server_owner makes o the owner of a server-side child sk, with local
// address c: its listener's owner, or (listener unknown) the child's
// cgroup alone.
static __always_inline void server_owner(struct owner *o, const struct conn *c, const struct sock *sk)
{
	struct task_hdr *l = listener_of(c);
	if (l) {
		o->hdr = *l;
	} else {
		o->hdr.cgroup_id = sk_cgroup_id(sk);
		count(&untracked, UNOWNED_ACCEPT);
	}
	o->hdr.type = EVENT_TCP;
	o->role = ROLE_SERVER;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(handle_set_state, const struct sock *sk, const int oldstate, const int newstate)
{
	// Only these transitions matter; every other one returns before a
	// map is touched.
	int connecting = newstate == TCP_SYN_SENT;
	int established = newstate == TCP_ESTABLISHED && (oldstate == TCP_SYN_SENT || oldstate == TCP_SYN_RECV);
	if (!connecting && !established && newstate != TCP_CLOSE && newstate != TCP_LISTEN)
		return 0;
	if (sk->sk_protocol != IPPROTO_TCP)
		return 0;
	__u16 family = sk->__sk_common.skc_family;
	if (family != AF_INET && family != AF_INET6)
		return 0;
	__u64 key = (__u64)sk;
	if (established && oldstate == TCP_SYN_SENT) {
		// A client's handshake completing: its owner was taken at
		// connect(), its addresses are read when it is reported, and
		// its start is the connect() — unless a SYN was sent again:
		// then the handshake's end, so that the two sides' starts stay
		// within a round trip (the correlator pairs them by it).
		if (TCP_RD(sk, total_retrans) == 0)
			return 0;
		struct owner *c = bpf_map_lookup_elem(&socks, &key);
		if (c)
			c->start_ns = bpf_ktime_get_ns();
		return 0;
	}
	__u64 now = bpf_ktime_get_ns();

	if (connecting) {
		// connect(): process context, the caller owns the socket.
		struct owner o = {};
		fill_current(&o.hdr, EVENT_TCP, now);
		o.start_ns = now;
		o.cookie = live_cookie(sk);
		o.unsent = o.cookie;
		o.role = ROLE_CLIENT;
		bpf_map_update_elem(&socks, &key, &o, BPF_ANY);
		return 0;
	}
	if (newstate == TCP_LISTEN) {
		// listen(): process context, the caller owns what it accepts.
		struct conn c;
		read_conn_btf(&c, sk);
		struct task_hdr h;
		fill_current(&h, EVENT_TCP, now);
		add_listener(sk, &c, &h, BPF_ANY);
		return 0;
	}
	if (oldstate == TCP_LISTEN) {
		remove_listener(sk);
		return 0;
	}
	if (established) {
		// From SYN_RECV. A server-side child is in no task's files
		// until accepted; a socket that has one is a client in a
		// simultaneous open (or connected to itself), or a Fast Open
		// child accepted early: only then is socks asked which.
		if (sk->sk_socket) {
			struct owner *c = bpf_map_lookup_elem(&socks, &key);
			if (c && c->role == ROLE_CLIENT)
				return 0;
		}
		// A server-side child, in softirq context: owned by whoever
		// listens; accepted or not, the connection is made.
		struct owner o = {};
		struct conn c;
		read_conn_btf(&c, sk);
		o.start_ns = now;
		o.cookie = live_cookie(sk);
		o.unsent = o.cookie;
		server_owner(&o, &c, sk);
		o.hdr.ts_ns = now;
		bpf_map_update_elem(&socks, &key, &o, BPF_ANY);
		return 0;
	}

	// newstate == TCP_CLOSE
	struct owner *o = bpf_map_lookup_elem(&socks, &key);
	if (o && !same_socket(o->cookie, sk->__sk_common.skc_cookie.counter)) {
		// Another socket's, once at this address, whose close went
		// unseen (the hooks were detached meanwhile).
		bpf_map_delete_elem(&socks, &key);
		o = NULL;
	}
	if (!o) {
		// A connection closing that was never seen open (a child that
		// never completed its handshake is not one).
		if (oldstate != TCP_SYN_RECV && oldstate != TCP_CLOSE)
			count(&untracked, UNTRACKED_CLOSE);
		return 0;
	}
	if (oldstate == TCP_SYN_SENT || (oldstate == TCP_SYN_RECV && o->role == ROLE_CLIENT)) {
		// A connect that never completed (the second: a simultaneous
		// open).
		__s32 err = sk->sk_err;
		if (!err)
			err = sk->sk_err_soft;
		emit_tcp(sk, o, TCP_PHASE_CONNECT_FAILED, err, now, oldstate, 1);
	} else {
		// Claim the connect/accept: unless the sweep sent it, this
		// close stands for it too.
#ifdef WEFT_LEGACY
		__u8 sent = o->unsent == 0;
		o->unsent = 0;
#else
		__u8 sent = __sync_lock_test_and_set(&o->unsent, 0) == 0;
#endif
		emit_tcp(sk, o, TCP_PHASE_CLOSE, 0, now, oldstate, sent);
	}
	bpf_map_delete_elem(&socks, &key);
	return 0;
}

// ---- the sweep ----
//
// A connection is reported once, at close, unless it lives longer than a
// while: then this iterator over socks, run by user space every so often,
// sends its connect/accept (at its start time) while it is open. The
// connect/accept is reserved before it is claimed, so when the sweep wins
// the claim its record precedes the close in the ring; when the close
// won, the record is discarded. The claim is a compare-and-swap of the
// cookie the sweep read: it fails if the element was freed and reused by
// another connection meanwhile. The sweep never fills more than half the
// ring (live hooks would lose events): what it leaves is counted in
// SWEEP_DEFERRED and sent by a later pass, or by the close.

// sweep_age: [0] how old (ns) an open connection must be for the sweep
// to report it, [1] nonzero on a progress pass; set by user space before
// each sweep (0 at shutdown: all, no progress).
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} sweep_age SEC(".maps");

// progress_one sends the byte totals so far of o, the owner of the
// established socket at *key whose connect/accept was sent, when they
// changed since its last progress record (RFC 4898 counters, as at close:
// a client's SYN is not data; established, no FIN is counted yet). Its
// totals are remembered in o only once the record is reserved, so the
// next record's prior is what the last one carried. (A close racing this
// pass on another CPU may read the totals before they are remembered:
// then its prior is the older one, and the bytes between count twice.)
static __always_inline void progress_one(__u64 *key, struct owner *o)
{
	__u64 addr = *key;
	__u64 now_cookie, acked, recv;
	__u8 state;
	if (have_rdonly_cast) {
		struct sock *sk = AS(struct sock, addr);
		now_cookie = sk->__sk_common.skc_cookie.counter;
		state = sk->__sk_common.skc_state;
		acked = AS(struct tcp_sock, addr)->bytes_acked;
		recv = AS(struct tcp_sock, addr)->bytes_received;
	} else {
		struct sock *sk = (struct sock *)addr;
		now_cookie = BPF_CORE_READ(sk, __sk_common.skc_cookie.counter);
		state = BPF_CORE_READ(sk, __sk_common.skc_state);
		acked = BPF_CORE_READ((struct tcp_sock *)addr, bytes_acked);
		recv = BPF_CORE_READ((struct tcp_sock *)addr, bytes_received);
	}
	if (!same_socket(o->cookie, now_cookie) || state != TCP_ESTABLISHED)
		return;
	if (o->role == ROLE_CLIENT && acked > 0)
		acked--; // SYN
	if (acked == o->rep_sent && recv == o->rep_received)
		return;
	struct tcp_event *e = NULL;
	if (bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) < bpf_ringbuf_query(&events, BPF_RB_RING_SIZE) / 2)
		e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(&untracked, PROGRESS_DEFERRED);
		return;
	}
	fill_tcp_hdr(e, o, TCP_PHASE_PROGRESS, 0, bpf_ktime_get_ns(), 1);
	e->bytes_sent = acked;
	e->bytes_received = recv;
	if (have_rdonly_cast) {
		read_conn_btf(&e->conn, AS(struct sock, addr));
		e->conn.lport = bpf_ntohs(AS(struct inet_sock, addr)->inet_sport);
	} else {
		read_conn_core(&e->conn, (struct sock *)addr);
		e->conn.lport = bpf_ntohs(BPF_CORE_READ((struct inet_sock *)addr, inet_sport));
	}
	o->rep_sent = acked;
	o->rep_received = recv;
	submit(e, sizeof(*e));
}

// sweep_one reports o, the owner of the socket at *key, if it is due: its
// connect/accept once, then its progress on progress passes.
static __always_inline void sweep_one(__u64 *key, struct owner *o)
{
	__u64 cookie = o->unsent;
	__u32 zero = 0;
	if (!cookie) {
		__u32 one = 1;
		__u64 *prog = bpf_map_lookup_elem(&sweep_age, &one);
		if (prog && *prog)
			progress_one(key, o);
		return;
	}
	__u64 *age = bpf_map_lookup_elem(&sweep_age, &zero);
	if (!age || bpf_ktime_get_ns() - o->start_ns < *age)
		return;
	// The key is the socket's address: read it (fault-safe loads) and
	// check it is still this connection (its cookie is ours), past its
	// handshake and not closing.
	__u64 addr = *key;
	__u64 now_cookie;
	__u8 state;
	if (have_rdonly_cast) {
		struct sock *sk = AS(struct sock, addr);
		now_cookie = sk->__sk_common.skc_cookie.counter;
		state = sk->__sk_common.skc_state;
	} else {
		struct sock *sk = (struct sock *)addr;
		now_cookie = BPF_CORE_READ(sk, __sk_common.skc_cookie.counter);
		state = BPF_CORE_READ(sk, __sk_common.skc_state);
	}
	if (!same_socket(cookie, now_cookie))
		return;
	if (state == TCP_SYN_SENT || state == TCP_SYN_RECV || state == TCP_CLOSE || state == TCP_LISTEN)
		return;
	// Not reserve(): a full ring here loses nothing, the close reports it.
	struct tcp_event *e = NULL;
	if (bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) < bpf_ringbuf_query(&events, BPF_RB_RING_SIZE) / 2)
		e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(&untracked, SWEEP_DEFERRED);
		return;
	}
	__u8 phase = o->role == ROLE_CLIENT ? TCP_PHASE_CONNECT : TCP_PHASE_ACCEPT;
	fill_tcp_hdr(e, o, phase, 0, o->start_ns, 0);
	if (have_rdonly_cast) {
		read_conn_btf(&e->conn, AS(struct sock, addr));
		e->conn.lport = bpf_ntohs(AS(struct inet_sock, addr)->inet_sport);
	} else {
		read_conn_core(&e->conn, (struct sock *)addr);
		e->conn.lport = bpf_ntohs(BPF_CORE_READ((struct inet_sock *)addr, inet_sport));
	}
	e->cookie = cookie;
#ifdef WEFT_LEGACY
	if (o->unsent != cookie) {
		bpf_ringbuf_discard(e, 0);
		return;
	}
	o->unsent = 0;
#else
	if (__sync_val_compare_and_swap(&o->unsent, cookie, 0) != cookie) {
		bpf_ringbuf_discard(e, 0);
		return;
	}
#endif
	submit(e, sizeof(*e));
}

// The sweep has two entry points, the same walk: user space loads the
// first the kernel takes. sweep_socks, a map-element iterator (Linux
// 5.9+), is refused by some kernels' builds (6.18 on the build machines
// answers EPERM to any iter/bpf_map_elem program); sweep_run, a syscall
// program run once by BPF_PROG_RUN that walks socks with
// bpf_for_each_map_elem, needs Linux 5.14.

SEC("iter/bpf_map_elem")
int sweep_socks(struct bpf_iter__bpf_map_elem *ctx)
{
	__u64 *key = ctx->key;
	struct owner *o = ctx->value;
	if (key && o)
		sweep_one(key, o);
	return 0;
}

static long sweep_elem(void *map, __u64 *key, struct owner *o, void *ctx)
{
	sweep_one(key, o);
	return 0;
}

SEC("syscall")
int sweep_run(void *ctx)
{
	bpf_for_each_map_elem(&socks, sweep_elem, NULL, 0);
	return 0;
}

// ---- unix ----

// sock_ino is the inode number of sk's socket, 0 if it has none.
static __always_inline __u64 sock_ino(struct sock *sk)
{
	if (!sk)
		return 0;
	struct socket *sock = BPF_CORE_READ(sk, sk_socket);
	if (!sock)
		return 0;
	struct socket_alloc *sa = container_of(sock, struct socket_alloc, socket);
	return BPF_CORE_READ(sa, vfs_inode.i_ino);
}

// A unix stream (or seqpacket) connect queues the new connection's
// server-side socket on the listener and then, still in the connecting
// task, tells the listener data is ready. That one moment knows both
// ends: the connecting task (current), the listener (who listen()ed, its
// cgroup, its path), and the pair of sockets.
SEC("tp_btf/sk_data_ready")
int BPF_PROG(handle_data_ready, const struct sock *sk)
{
	// Fires for every socket with data: return at once unless this is a
	// unix listener.
	if (sk->__sk_common.skc_family != AF_UNIX || sk->__sk_common.skc_state != TCP_LISTEN)
		return 0;
	struct unix_sock *lu = bpf_skc_to_unix_sock((void *)sk);
	if (!lu)
		return 0;
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;

	// The new connection's skb is the last queued, unless another
	// connect raced in behind it: look back a few for ours, the newest
	// whose server-side socket's peer credentials are the connecting
	// process's and that no other thread of it has claimed.
	__u32 queued = sk->sk_receive_queue.qlen;
	struct sk_buff *skb = sk->sk_receive_queue.prev;
	__u64 client = 0;
	for (int i = 0; i < 4 && i < queued && skb; i++) {
		struct sock *s = skb->sk;
		skb = skb->prev;
		if (!s)
			continue;
		struct pid *pp = s->sk_peer_pid;
		if (!pp || pp->numbers[0].nr != tgid)
			continue;
		struct claim k = {.sk = (__u64)s, .ino = sock_ino(BPF_CORE_READ((struct unix_sock *)s, peer))};
		__u8 one = 1;
		if (bpf_map_update_elem(&claimed, &k, &one, BPF_NOEXIST) != 0)
			continue; // another thread's, or already reported
		client = k.ino;
		break;
	}

	struct unix_event *e = reserve(sizeof(*e));
	if (!e)
		return 0;
	fill_current(&e->hdr, EVENT_UNIX, bpf_ktime_get_ns());
	// Socket identities are inode numbers (what ss -x shows): the
	// client's, and the listener's (the server end gets its own only
	// when accepted). Addresses would not do: they are reused as soon as
	// a socket is freed. Should the client not be found, the event
	// still stands, under a one-off id.
	if (!client)
		count(&untracked, UNIX_UNMATCHED);
	e->sk = client ? client : (e->hdr.ts_ns | (1ULL << 63));
	e->peer_sk = sock_ino((struct sock *)sk);
	e->phase = TCP_PHASE_CONNECT;
	e->role = ROLE_CLIENT;
	e->sock_type = sk->sk_type;
	struct pid *lp = sk->sk_peer_pid; // who listen()ed
	e->peer_pid = lp ? lp->numbers[0].nr : 0;
	e->peer_cgroup_id = sk_cgroup_id(sk);
	e->path_len = 0;
	__builtin_memset(e->_pad, 0, sizeof(e->_pad));
	struct unix_address *addr = lu->addr;
	if (addr) {
		int len = addr->len - 2; // minus sun_family
		if (len < 0)
			len = 0;
		if (len > UNIX_PATH_MAX)
			len = UNIX_PATH_MAX;
		e->path_len = len;
		bpf_probe_read_kernel(e->path, sizeof(e->path), &addr->name[0].sun_path);
	}
	submit(e, sizeof(*e));
	return 0;
}

// ---- start-up scan ----
//
// Sockets opened before the collector attached are found by iterators,
// run right after attaching (live hooks win: nothing here overwrites an
// entry). iter/task_file, twice: every task's open files, for the owner
// of each listener, then of each connected TCP socket (a server side if
// a listener has its local address); iter/tcp: connections in no task's
// files yet (handshake done, not accepted) — it walks only the network
// namespace of the collector itself (the host's, when it runs there).


#define S_IFMT 00170000
#define S_IFSOCK 0140000

// A socket reached through a task's files is read with SCAN_RD: the
// legacy object finds it without bpf_sock_from_file (Linux 5.11), as a
// plain address.
#ifdef WEFT_LEGACY
#define SCAN_RD BPF_CORE_READ
#define scan_read_conn read_conn_core
#else
#define SCAN_RD DIRECT
#define scan_read_conn read_conn_btf
#endif

SEC("iter/task_file")
int scan_files(struct bpf_iter__task_file *ctx)
{
	struct task_struct *t = ctx->task;
	struct file *f = ctx->file;
	if (!t || !f)
		return 0;
#ifdef WEFT_LEGACY
	// A socket's file is sockfs's; its private_data is the socket.
	if ((BPF_CORE_READ(f, f_inode, i_mode) & S_IFMT) != S_IFSOCK)
		return 0;
	struct socket *sock = BPF_CORE_READ(f, private_data);
	struct sock *sk = BPF_CORE_READ(sock, sk);
#else
	struct socket *sock = bpf_sock_from_file(f);
	if (!sock)
		return 0;
	struct sock *sk = sock->sk;
#endif
	if (!sk)
		return 0;
	__u16 family = SCAN_RD(sk, __sk_common.skc_family);
	if (family != AF_INET && family != AF_INET6)
		return 0;
	__u16 proto = SCAN_RD(sk, sk_protocol);
	__u8 state = SCAN_RD(sk, __sk_common.skc_state);
	__u64 now = bpf_ktime_get_ns();
	// An MPTCP listener (Go's default) accepts plain TCP too, through a
	// TCP subflow listening on the same address.
	__u32 zero = 0;
	__u32 *phase = bpf_map_lookup_elem(&scan_phase, &zero);
	if (!phase)
		return 0;
	if (*phase == 0) {
		// First pass: listeners.
		if (state == TCP_LISTEN && (proto == IPPROTO_TCP || proto == IPPROTO_MPTCP)) {
			struct conn c;
			scan_read_conn(&c, sk);
			struct task_hdr h;
			fill_task(&h, t, EVENT_TCP, now);
			add_listener(sk, &c, &h, BPF_NOEXIST);
		}
		return 0;
	}
	// Second pass: connected sockets, owned by this task; a server side
	// if its local address is a listener's. (Works in every network
	// namespace, unlike iter/tcp, which walks only the collector's.)
	if (proto != IPPROTO_TCP || state == TCP_LISTEN || state == TCP_CLOSE || state == TCP_SYN_SENT || state == TCP_SYN_RECV)
		return 0;
	struct owner o = {};
	fill_task(&o.hdr, t, EVENT_TCP, now);
	o.start_ns = now;
	o.cookie = SCANNED_COOKIE(sk, SCAN_RD);
	o.unsent = o.cookie;
	struct conn c;
	scan_read_conn(&c, sk);
	o.role = listener_of(&c) ? ROLE_SERVER : ROLE_CLIENT;
	__u64 key = (__u64)sk;
	struct owner *old = bpf_map_lookup_elem(&socks, &key);
	if (old && old->cookie == o.cookie)
		return 0; // seen live
	// None, or another socket's, once at this address, closed unseen.
	bpf_map_update_elem(&socks, &key, &o, BPF_ANY);
	return 0;
}

SEC("iter/tcp")
int scan_tcp(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	if (!skc)
		return 0;
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(skc);
	if (!tp) // request and time-wait sockets
		return 0;
	struct sock *sk = (struct sock *)tp;
	__u8 state = sk->__sk_common.skc_state;
	if (state == TCP_LISTEN || state == TCP_CLOSE || state == TCP_SYN_SENT || state == TCP_SYN_RECV)
		return 0;
	__u64 key = (__u64)sk;
	__u64 cookie = live_cookie(sk);
	struct owner *old = bpf_map_lookup_elem(&socks, &key);
	if (old && old->cookie == cookie)
		return 0; // seen live, or in some task's files
	struct conn c;
	read_conn_btf(&c, sk);
	struct task_hdr *l = listener_of(&c);
	// In no task's files: a server child not accepted yet (or a socket
	// whose owner could not be seen).
	struct owner n = {};
	n.start_ns = bpf_ktime_get_ns();
	n.cookie = cookie;
	n.unsent = cookie;
	if (l) {
		server_owner(&n, &c, sk);
	} else {
		n.hdr.type = EVENT_TCP;
		n.hdr.cgroup_id = sk_cgroup_id(sk);
		n.role = ROLE_CLIENT;
	}
	n.hdr.ts_ns = n.start_ns;
	bpf_map_update_elem(&socks, &key, &n, BPF_ANY);
	return 0;
}
