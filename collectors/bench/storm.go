// Package bench measures the collector the way `weft bench collector`
// reports it: the user-space path (decode → enrich → encode → publish) on
// replayed ring-buffer records, and a loopback TCP connection storm run
// with and without the collector attached, in the same run, so every
// figure is a ratio to a baseline measured beside it.
package bench

import (
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
	if len(parts) != 3 {
		fmt.Fprintln(os.Stderr, "bench storm: bad", stormEnv, v)
		os.Exit(2)
	}
	conns, _ := strconv.Atoi(parts[0])
	workers, _ := strconv.Atoi(parts[1])
	payload, _ := strconv.Atoi(parts[2])
	d, err := RunStorm(conns, workers, payload)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench storm:", err)
		os.Exit(1)
	}
	fmt.Println(d.Nanoseconds())
	os.Exit(0)
}

// RunStorm makes conns loopback TCP connections from workers threads:
// connect, send payload bytes, receive them echoed, close. Each worker
// owns a listener and drives both ends of its connections itself with
// blocking system calls: on loopback the handshake, the data and the
// reset are delivered inside the sending call, so no call sleeps and no
// thread waits on another. The storm is the kernel's connection path and
// nothing else, which is what the collector hooks. The client closes with
// SO_LINGER 0 (a reset), so no TIME_WAIT piles up and ports are not
// exhausted. It returns the wall time of the whole storm.
func RunStorm(conns, workers, payload int) (time.Duration, error) {
	var next atomic.Int64
	var firstErr error
	var errOnce sync.Once
	fail := func(err error) { errOnce.Do(func() { firstErr = err }) }
	var ready, wg sync.WaitGroup
	begin := make(chan struct{})
	for w := 0; w < workers; w++ {
		wg.Add(1)
		ready.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			lfd, addr, err := listen()
			ready.Done()
			if err != nil {
				fail(err)
				return
			}
			defer unix.Close(lfd)
			<-begin
			buf := make([]byte, payload)
			for next.Add(1) <= int64(conns) {
				if err := oneConn(lfd, addr, buf); err != nil {
					fail(err)
					return
				}
			}
		}()
	}
	ready.Wait()
	start := time.Now()
	close(begin)
	wg.Wait()
	return time.Since(start), firstErr
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
