// Package workload generates traffic with known ground truth for
// collector and correlator tests: TCP and unix-socket clients and servers
// that exchange exact byte counts and report their addresses, run as
// separate processes (re-executions of the test binary) so each has its
// own pid, cgroup and network namespace.
//
// A test package using it calls Main from its TestMain:
//
//	func TestMain(m *testing.M) { workload.Main(); os.Exit(m.Run()) }
package workload

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const roleEnv = "WEFT_WORKLOAD_ROLE"

// Main runs a workload role and exits when the process was started as
// one; otherwise it returns at once.
func Main() {
	role := os.Getenv(roleEnv)
	if role == "" {
		return
	}
	args := strings.Split(os.Getenv("WEFT_WORKLOAD_ARGS"), "\x1f")
	code, err := run(role, args)
	if err != nil {
		fmt.Fprintln(os.Stderr, "workload:", role, err)
		os.Exit(99)
	}
	os.Exit(code)
}

// Args of the roles:
//
//	server  network addr count up down   accept count conns; read up, write down, close
//	client  network addr up down exit     connect, write up, read down, close, exit with code
//	exit    code                          exit with code at once
//	holdserver  network addr up down      accept one conn; per up bytes read, write down, until EOF
//	holdclient  network addr up down      connect, print "local ADDR", then per stdin line "step": write up,
//	                                      read down, print "sent S received R" (totals); at EOF: close
//	serve   network addr up down [ready]  accept for ever, each conn at once: read up, write down, close,
//	                                      print "served N from ADDR"; after listening, create the file ready
//	calls   network addr n up down [wait] n connections one after another: write up, read down, close,
//	                                      print "call I sent S received R" (or "call I error …"), then
//	                                      "done OK of N"; exit 1 if one failed, or with wait wait for SIGTERM
//	serveports network host first n up down [ready]
//	                                      serve (above) on each of the n ports first, first+1, …; prints
//	                                      "served N on PORT from ADDR"
//	paced   network host first n up down pause stop
//	                                      up to n connections one after another, the i-th (from 0) to port
//	                                      first+i, pause (a Go duration) between them, until the file stop
//	                                      exists; prints "call I port P start S end E sent S received R" (S, E:
//	                                      Unix nanoseconds, before the dial and after the close) or "call I port
//	                                      P start S end E error …", then "done OK of N"; exit 1 if one failed
//	pool    network addr up down [ready]  accept for ever, each conn: per up bytes read, write down, until
//	                                      EOF; prints "closed N from ADDR after K requests"
//	longcall network addr up down pause stop
//	                                      one connection: write up, read down, every pause, until the file stop
//	                                      exists, then close; prints "local ADDR", "step K sent S received R"
//	                                      (totals), and at the end "closed sent S received R"
func run(role string, a []string) (int, error) {
	switch role {
	case "serve":
		up, down := atoi(a[2]), atoi(a[3])
		ln, err := listenReady(a, 4)
		if err != nil {
			return 0, err
		}
		defer ln.Close()
		return 0, acceptEach(ln, func(n int, c net.Conn) {
			if err := answer(c, up, down); err != nil {
				fmt.Printf("conn %d error %v\n", n, err)
				return
			}
			fmt.Printf("served %d from %s\n", n, c.RemoteAddr())
		})
	case "calls":
		n, up, down := atoi(a[2]), atoi(a[3]), atoi(a[4])
		ok := 0
		for i := 1; i <= n; i++ {
			c, err := net.Dial(a[0], a[1])
			if err != nil {
				fmt.Printf("call %d error %v\n", i, err)
				continue
			}
			_, err = c.Write(make([]byte, up))
			if err == nil {
				_, err = io.ReadFull(c, make([]byte, down))
			}
			c.Close()
			if err != nil {
				fmt.Printf("call %d error %v\n", i, err)
				continue
			}
			ok++
			fmt.Printf("call %d sent %d received %d\n", i, up, down)
		}
		fmt.Printf("done %d of %d\n", ok, n)
		if len(a) > 5 && a[5] == "wait" {
			// Until stopped (a pod's SIGTERM), so a Deployment's pod
			// does not start over.
			stop := make(chan os.Signal, 1)
			signal.Notify(stop, syscall.SIGTERM, os.Interrupt)
			<-stop
			return 0, nil
		}
		if ok != n {
			return 1, nil
		}
		return 0, nil
	case "serveports":
		first, n, up, down := atoi(a[2]), atoi(a[3]), atoi(a[4]), atoi(a[5])
		errc := make(chan error, n)
		for i := 0; i < n; i++ {
			ln, err := net.Listen(a[0], net.JoinHostPort(a[1], strconv.Itoa(first+i)))
			if err != nil {
				return 0, err
			}
			defer ln.Close()
			go func() { errc <- serveEach(ln, up, down) }()
		}
		if err := markReady(a, 6); err != nil {
			return 0, err
		}
		fmt.Printf("listening on %d ports from %d\n", n, first)
		return 0, <-errc
	case "paced":
		first, n, up, down := atoi(a[2]), atoi(a[3]), atoi(a[4]), atoi(a[5])
		pause, err := time.ParseDuration(a[6])
		if err != nil {
			return 0, err
		}
		ok, i := 0, 0
		for ; i < n; i++ {
			if _, err := os.Stat(a[7]); err == nil {
				break
			}
			port := first + i
			start := time.Now()
			err := exchange(a[0], net.JoinHostPort(a[1], strconv.Itoa(port)), up, down)
			end := time.Now()
			if err != nil {
				fmt.Printf("call %d port %d start %d end %d error %v\n", i, port, start.UnixNano(), end.UnixNano(), err)
			} else {
				ok++
				fmt.Printf("call %d port %d start %d end %d sent %d received %d\n", i, port, start.UnixNano(), end.UnixNano(), up, down)
			}
			time.Sleep(pause)
		}
		fmt.Printf("done %d of %d\n", ok, i)
		if ok != i {
			return 1, nil
		}
		return 0, nil
	case "pool":
		up, down := atoi(a[2]), atoi(a[3])
		ln, err := listenReady(a, 4)
		if err != nil {
			return 0, err
		}
		defer ln.Close()
		return 0, acceptEach(ln, func(n int, c net.Conn) {
			k := 0
			for answer(c, up, down) == nil {
				k++
			}
			fmt.Printf("closed %d from %s after %d requests\n", n, c.RemoteAddr(), k)
		})
	case "longcall":
		up, down := atoi(a[2]), atoi(a[3])
		pause, err := time.ParseDuration(a[4])
		if err != nil {
			return 0, err
		}
		c, err := net.Dial(a[0], a[1])
		if err != nil {
			return 0, err
		}
		fmt.Printf("local %s\n", c.LocalAddr())
		var sent, received int
		for k := 1; ; k++ {
			if _, err := os.Stat(a[5]); err == nil {
				break
			}
			if _, err := c.Write(make([]byte, up)); err != nil {
				return 0, err
			}
			if _, err := io.ReadFull(c, make([]byte, down)); err != nil {
				return 0, err
			}
			sent, received = sent+up, received+down
			fmt.Printf("step %d sent %d received %d\n", k, sent, received)
			time.Sleep(pause)
		}
		if err := c.Close(); err != nil {
			return 0, err
		}
		fmt.Printf("closed sent %d received %d\n", sent, received)
		return 0, nil
	case "holdserver":
		up, down := atoi(a[2]), atoi(a[3])
		ln, err := net.Listen(a[0], a[1])
		if err != nil {
			return 0, err
		}
		defer ln.Close()
		fmt.Printf("listening %s\n", ln.Addr())
		c, err := ln.Accept()
		if err != nil {
			return 0, err
		}
		defer c.Close()
		for {
			if _, err := io.ReadFull(c, make([]byte, up)); err != nil {
				return 0, nil // the client closed
			}
			if _, err := c.Write(make([]byte, down)); err != nil {
				return 0, err
			}
		}
	case "holdclient":
		up, down := atoi(a[2]), atoi(a[3])
		c, err := net.Dial(a[0], a[1])
		if err != nil {
			return 0, err
		}
		fmt.Printf("local %s\n", c.LocalAddr())
		var sent, received int
		in := bufio.NewScanner(os.Stdin)
		for in.Scan() {
			if _, err := c.Write(make([]byte, up)); err != nil {
				return 0, err
			}
			if _, err := io.ReadFull(c, make([]byte, down)); err != nil {
				return 0, err
			}
			sent, received = sent+up, received+down
			fmt.Printf("sent %d received %d\n", sent, received)
		}
		return 0, c.Close()
	case "server":
		count, up, down := atoi(a[2]), atoi(a[3]), atoi(a[4])
		ln, err := net.Listen(a[0], a[1])
		if err != nil {
			return 0, err
		}
		defer ln.Close()
		fmt.Printf("listening %s\n", ln.Addr())
		for i := 0; i < count; i++ {
			c, err := ln.Accept()
			if err != nil {
				return 0, err
			}
			if _, err := io.ReadFull(c, make([]byte, up)); err != nil {
				return 0, err
			}
			if _, err := c.Write(make([]byte, down)); err != nil {
				return 0, err
			}
			fmt.Printf("accepted %s\n", c.RemoteAddr())
			c.Close()
		}
		return 0, nil
	case "client":
		up, down, code := atoi(a[2]), atoi(a[3]), atoi(a[4])
		c, err := net.Dial(a[0], a[1])
		if err != nil {
			fmt.Printf("error %v\n", err)
			return code, nil
		}
		fmt.Printf("local %s\n", c.LocalAddr())
		if _, err := c.Write(make([]byte, up)); err != nil {
			return 0, err
		}
		if _, err := io.ReadFull(c, make([]byte, down)); err != nil {
			return 0, err
		}
		c.Close()
		return code, nil
	case "exit":
		return atoi(a[0]), nil
	}
	return 0, fmt.Errorf("unknown role %q", role)
}

// serveEach serves every connection ln accepts as serve does.
// listenReady listens on network a[0], address a[1] (a unix socket's path
// removed first), marks itself ready (markReady a[ready]) and says where
// it listens.
func listenReady(a []string, ready int) (net.Listener, error) {
	if a[0] == "unix" {
		_ = os.Remove(a[1])
	}
	ln, err := net.Listen(a[0], a[1])
	if err != nil {
		return nil, err
	}
	if err := markReady(a, ready); err != nil {
		ln.Close()
		return nil, err
	}
	fmt.Printf("listening %s\n", ln.Addr())
	return ln, nil
}

// markReady creates the file a[i], a readiness probe's, when it is given.
func markReady(a []string, i int) error {
	if len(a) > i && a[i] != "" {
		return os.WriteFile(a[i], nil, 0o644)
	}
	return nil
}

func serveEach(ln net.Listener, up, down int) error {
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return acceptEach(ln, func(n int, c net.Conn) {
		if err := answer(c, up, down); err != nil {
			fmt.Printf("conn %d on %s error %v\n", n, port, err)
			return
		}
		fmt.Printf("served %d on %s from %s\n", n, port, c.RemoteAddr())
	})
}

// acceptEach accepts connections on ln until it fails, each handled by
// handle (n counts them from 1) in its own goroutine and closed after.
func acceptEach(ln net.Listener, handle func(n int, c net.Conn)) error {
	for n := 1; ; n++ {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			handle(n, c)
		}()
	}
}

// answer reads up bytes from c and writes down bytes back.
func answer(c net.Conn, up, down int) error {
	if _, err := io.ReadFull(c, make([]byte, up)); err != nil {
		return err
	}
	_, err := c.Write(make([]byte, down))
	return err
}

// exchange makes one connection to addr: writes up bytes, reads down,
// closes.
func exchange(network, addr string, up, down int) error {
	c, err := net.Dial(network, addr)
	if err != nil {
		return err
	}
	_, err = c.Write(make([]byte, up))
	if err == nil {
		_, err = io.ReadFull(c, make([]byte, down))
	}
	return errors.Join(err, c.Close())
}

// Run runs a role with its arguments, as Main does from the environment:
// what a command in an image (cmd/weft-workload) calls.
func Run(role string, args []string) (int, error) { return run(role, args) }

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

// Command returns the command for a role; wrap lets the caller place it
// (node.Container.Command), or nil to run it on the host.
func Command(wrap func(name string, args ...string) (*exec.Cmd, error), role string, args ...string) (*exec.Cmd, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	var cmd *exec.Cmd
	if wrap != nil {
		if cmd, err = wrap(self, "-test.run=^$"); err != nil {
			return nil, err
		}
	} else {
		cmd = exec.Command(self, "-test.run=^$")
	}
	cmd.Env = append(os.Environ(), roleEnv+"="+role, "WEFT_WORKLOAD_ARGS="+strings.Join(args, "\x1f"))
	cmd.Stderr = os.Stderr
	return cmd, nil
}

// Lines starts cmd and returns a channel of its stdout lines, closed at
// EOF.
func Lines(cmd *exec.Cmd) (<-chan string, error) {
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	ch := make(chan string, 16)
	go func() {
		defer close(ch)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			ch <- sc.Text()
		}
	}()
	return ch, nil
}
