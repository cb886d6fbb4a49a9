// Package bench measures the collector the way `weft bench collector`
// reports it: the user-space path (decode → enrich → encode → publish) on
// replayed ring-buffer records, and a loopback TCP connection storm run
// with and without the collector attached, in the same run, so every
// figure is a ratio to a baseline measured beside it.
package bench

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// stormEnv makes a child run one storm and exit; collectorEnv makes it
// run the collector (see collectorChild).
const (
	stormEnv     = "WEFT_BENCH_STORM"
	collectorEnv = "WEFT_BENCH_COLLECTOR"
)

// ChildMain runs the bench's child role and exits when this process was
// started as one (a storm, or the collector under measurement); otherwise
// it returns at once. Call it first in main, the command, or TestMain.
func ChildMain() {
	if os.Getenv(collectorEnv) != "" || os.Getenv(stormEnv) != "" {
		if err := pinFromEnv(); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(2)
		}
	}
	if url := os.Getenv(collectorEnv); url != "" {
		if err := collectorChild(url); err != nil {
			fmt.Fprintln(os.Stderr, "bench collector:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	v := os.Getenv(stormEnv)
	if v == "" {
		return
	}
	parts := strings.Split(v, ",")
	if len(parts) != 3 && (len(parts) != 4 || parts[3] != "serve") {
		fmt.Fprintln(os.Stderr, "bench storm: bad", stormEnv, v)
		os.Exit(2)
	}
	conns, _ := strconv.Atoi(parts[0])
	workers, _ := strconv.Atoi(parts[1])
	payload, _ := strconv.Atoi(parts[2])
	if err := stormChild(conns, workers, payload, len(parts) == 4); err != nil {
		fmt.Fprintln(os.Stderr, "bench storm:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// stormChild runs one storm segment of conns connections and prints its
// wall time in nanoseconds; serving, it runs one for each line read from
// stdin until stdin ends.
func stormChild(conns, workers, payload int, serve bool) error {
	st, err := NewStorm(workers, payload)
	if err != nil {
		return err
	}
	defer st.Close()
	run := func() error {
		d, err := st.Run(conns)
		if err != nil {
			return err
		}
		fmt.Println(d.Nanoseconds())
		return nil
	}
	if !serve {
		return run()
	}
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		if err := run(); err != nil {
			return err
		}
	}
	return in.Err()
}

// RunStorm makes conns loopback TCP connections from workers threads and
// returns the wall time: one segment of a Storm.
func RunStorm(conns, workers, payload int) (time.Duration, error) {
	st, err := NewStorm(workers, payload)
	if err != nil {
		return 0, err
	}
	defer st.Close()
	return st.Run(conns)
}

// A Storm is loopback TCP connections made from worker threads, in
// segments: connect, send payload bytes, receive them echoed, close. Each
// worker owns a listener and drives both ends of its connections itself
// with blocking system calls: on loopback the handshake, the data and
// the reset are delivered inside the sending call, so no call sleeps and
// no thread waits on another. The storm is the kernel's connection path
// and nothing else, which is what the collector hooks. The client closes
// with SO_LINGER 0 (a reset), so no TIME_WAIT piles up and ports are not
// exhausted. The threads and listeners stay between segments.
type Storm struct {
	payload int
	start   []chan int64 // per worker: the connection count to reach
	next    atomic.Int64
	done    sync.WaitGroup
	mu      sync.Mutex
	err     error
}

// NewStorm starts workers threads, each with its listener, idle until Run.
func NewStorm(workers, payload int) (*Storm, error) {
	st := &Storm{payload: payload}
	var ready sync.WaitGroup
	for w := 0; w < workers; w++ {
		ch := make(chan int64)
		st.start = append(st.start, ch)
		ready.Add(1)
		go st.worker(ch, &ready)
	}
	ready.Wait()
	if st.err != nil {
		st.Close()
		return nil, st.err
	}
	return st, nil
}

func (st *Storm) fail(err error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.err == nil {
		st.err = err
	}
}

func (st *Storm) worker(segments chan int64, ready *sync.WaitGroup) {
	runtime.LockOSThread()
	lfd, addr, err := listen()
	ready.Done()
	if err != nil {
		st.fail(err)
		for range segments {
			st.done.Done()
		}
		return
	}
	defer unix.Close(lfd)
	buf := make([]byte, st.payload)
	for end := range segments {
		for st.next.Add(1) <= end {
			if err := oneConn(lfd, addr, buf); err != nil {
				st.fail(err)
				break
			}
		}
		st.done.Done()
	}
}

// Run makes conns connections and returns their wall time.
func (st *Storm) Run(conns int) (time.Duration, error) {
	st.mu.Lock()
	err := st.err
	st.mu.Unlock()
	if err != nil {
		return 0, err
	}
	end := st.next.Load() + int64(conns)
	st.done.Add(len(st.start))
	start := time.Now()
	for _, ch := range st.start {
		ch <- end
	}
	st.done.Wait()
	d := time.Since(start)
	st.next.Store(end) // workers overshoot by one each
	st.mu.Lock()
	defer st.mu.Unlock()
	return d, st.err
}

// Close stops the workers and closes their listeners.
func (st *Storm) Close() {
	for _, ch := range st.start {
		close(ch)
	}
}

// listen opens a loopback listener on a free port.
func listen() (int, *unix.SockaddrInet4, error) {
	lfd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, nil, fmt.Errorf("socket: %w", err)
	}
	if err := unix.Bind(lfd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		unix.Close(lfd)
		return -1, nil, fmt.Errorf("bind: %w", err)
	}
	if err := unix.Listen(lfd, 128); err != nil {
		unix.Close(lfd)
		return -1, nil, fmt.Errorf("listen: %w", err)
	}
	sa, err := unix.Getsockname(lfd)
	if err != nil {
		unix.Close(lfd)
		return -1, nil, err
	}
	return lfd, sa.(*unix.SockaddrInet4), nil
}

// oneConn is one connection, both ends: connect, accept, payload there
// and back, reset by the client, closed by the server.
func oneConn(lfd int, addr *unix.SockaddrInet4, buf []byte) error {
	cfd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	if err := unix.Connect(cfd, addr); err != nil {
		unix.Close(cfd)
		return fmt.Errorf("connect: %w", err)
	}
	sfd, _, err := unix.Accept4(lfd, unix.SOCK_CLOEXEC)
	if err != nil {
		unix.Close(cfd)
		return fmt.Errorf("accept: %w", err)
	}
	defer unix.Close(sfd)
	defer unix.Close(cfd)
	// In order, stopping at the first failure (a read after a failed
	// write would wait forever).
	for _, step := range []struct {
		what string
		do   func() error
	}{
		{"client write", func() error { return writeFull(cfd, buf) }},
		{"server read", func() error { return readFull(sfd, buf) }},
		{"server write", func() error { return writeFull(sfd, buf) }},
		{"client read", func() error { return readFull(cfd, buf) }},
		{"linger", func() error {
			return unix.SetsockoptLinger(cfd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
		}},
	} {
		if err := step.do(); err != nil {
			return fmt.Errorf("%s: %w", step.what, err)
		}
	}
	return nil
}

func readFull(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := unix.Read(fd, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return io.EOF
		}
		b = b[n:]
	}
	return nil
}

func writeFull(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// cpuTime is this process's user+system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// peakRSS is this process's peak resident set (VmHWM), in bytes.
func peakRSS() uint64 { return procStatus("VmHWM:") }

// procStatus reads one kB field of /proc/self/status, in bytes.
func procStatus(field string) uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}
