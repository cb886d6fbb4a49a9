// Package neo4j runs a real Neo4j Community DBMS (5.26 LTS, from Maven
// Central) in a child JVM, for weft's tests and for `task neo4j`: Bolt on
// 127.0.0.1, authentication on with a generated password, its home and
// logs in one directory.
//
// The JVM runs the launcher in this directory (pom.xml and one Java class,
// embedded in this package), which Build compiles with Maven once and
// caches. Start waits until Bolt answers; Stop ends the JVM by its process
// group; the JVM also stops by itself when the Go process that started it
// goes away (it watches its stdin).
//
// It imports no Neo4j driver: readiness is the launcher's word and a Bolt
// handshake. Only tests and tools under testenv import it.
package neo4j

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// User is the Neo4j user the server is started with.
const User = "neo4j"

// Options say how to start a server. The zero value is a fresh server on
// a free port in a new temp dir.
type Options struct {
	// Dir holds the DBMS home (Dir/home) and the launcher's log
	// (Dir/neo4j.log); "" makes a new temp dir. Start on the Dir of a
	// stopped server reopens its databases.
	Dir string
	// Port is the Bolt port on 127.0.0.1; 0 lets Neo4j take a free one.
	Port int
	// Password of user neo4j; "" generates one. It is set at every start.
	Password string
	// Release is the Neo4j to run; the zero value is LTS.
	Release Release
	// Java is the java binary; default the JDK's that built the launcher
	// (see FindJava).
	Java string
	// Conf is more lines for neo4j.conf, after weft's (a read-only
	// database: "server.databases.read_only=neo4j").
	Conf []string
	// Heap is the JVM's maximum heap (-Xmx); default 1g.
	Heap string
}

// Server is a running Neo4j.
type Server struct {
	// URI is bolt://127.0.0.1:PORT.
	URI      string
	User     string
	Password string
	Port     int
	// Dir is Options.Dir (made if it was empty); the caller removes it.
	Dir string

	opts   Options
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	exited chan struct{} // closed when the JVM has exited
	err    error         // the JVM's exit, valid after exited

	stopOnce sync.Once
	stopErr  error
}

// Logs are the files to read when something went wrong: the launcher's
// output and Neo4j's own debug log.
func (s *Server) Logs() []string {
	return []string{filepath.Join(s.Dir, "neo4j.log"), filepath.Join(s.Dir, "home", "logs", "debug.log")}
}

// Start builds the launcher if needed (see Build), starts Neo4j, and
// returns once it has said it is ready and Bolt answers a handshake, or
// ctx ends. The first start of a database takes 10–30 s.
func Start(ctx context.Context, o Options) (*Server, error) {
	if o.Release == (Release{}) {
		o.Release = LTS
	}
	l, err := BuildRelease(ctx, o.Release)
	if err != nil {
		return nil, err
	}
	if o.Dir == "" {
		if o.Dir, err = os.MkdirTemp("", "weft-neo4j-"); err != nil {
			return nil, fmt.Errorf("make a directory for neo4j: %w", err)
		}
	}
	if o.Password == "" {
		b := make([]byte, 16)
		_, _ = rand.Read(b)
		o.Password = hex.EncodeToString(b)
	}
	if o.Heap == "" {
		o.Heap = "1g"
	}
	java := l.Java
	if o.Java != "" {
		if java, err = exec.LookPath(o.Java); err != nil {
			return nil, fmt.Errorf("run neo4j with java %s: %w", o.Java, err)
		}
	}
	logPath := filepath.Join(o.Dir, "neo4j.log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open the neo4j log: %w", err)
	}
	fmt.Fprintf(logf, "--- %s: starting %s in %s with %s, bolt port %d\n", time.Now().Format(time.RFC3339), o.Release, o.Dir, java, o.Port)

	cmd := exec.Command(java, "-Xmx"+o.Heap, "-XX:+UseSerialGC", "-XX:+ExitOnOutOfMemoryError",
		"weft.testenv.neo4j.Launcher", filepath.Join(o.Dir, "home"), strconv.Itoa(o.Port))
	// The classpath (some 200 jars) goes in the environment, to keep the
	// process list readable.
	cmd.Env = append(os.Environ(), "CLASSPATH="+l.Classpath, "WEFT_NEO4J_PASSWORD="+o.Password,
		"WEFT_NEO4J_CONF="+strings.Join(o.Conf, "\n"))
	cmd.Stderr = logf
	// Its own process group, so Stop ends the JVM and anything it started.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		_ = logf.Close()
		return nil, fmt.Errorf("start neo4j: %w", err)
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		_ = logf.Close()
		return nil, fmt.Errorf("start neo4j: %w", err)
	}
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		return nil, fmt.Errorf("start neo4j (%s): %w", java, err)
	}
	s := &Server{User: User, Password: o.Password, Dir: o.Dir, opts: o, cmd: cmd, stdin: stdin, exited: make(chan struct{})}

	ready := make(chan string, 1)
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(logf, line)
			if uri, ok := strings.CutPrefix(line, "weft-neo4j ready "); ok {
				select {
				case ready <- uri:
				default:
				}
			}
		}
	}()
	go func() {
		<-copied // Wait closes stdout; read it all first
		s.err = cmd.Wait()
		fmt.Fprintf(logf, "--- %s: neo4j exited: %v\n", time.Now().Format(time.RFC3339), s.err)
		_ = logf.Close()
		close(s.exited)
	}()

	fail := func(err error) (*Server, error) {
		_ = s.Kill()
		return nil, fmt.Errorf("%w (logs: %s)", err, strings.Join(s.Logs(), ", "))
	}
	select {
	case uri := <-ready:
		u, err := url.Parse(uri)
		if err != nil {
			return fail(fmt.Errorf("neo4j said it is ready at %q: %w", uri, err))
		}
		s.URI = uri
		s.Port, _ = strconv.Atoi(u.Port())
	case <-s.exited:
		return fail(fmt.Errorf("neo4j exited before it was ready: %v", s.err))
	case <-ctx.Done():
		return fail(fmt.Errorf("wait for neo4j to start: %w", context.Cause(ctx)))
	}
	if err := handshake(ctx, "127.0.0.1:"+strconv.Itoa(s.Port)); err != nil {
		return fail(err)
	}
	return s, nil
}

// handshake opens a Bolt connection and checks that the server agrees on
// a Bolt 5 or 4 version.
func handshake(ctx context.Context, addr string) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("bolt handshake with %s: %w", addr, err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	// Magic preamble, then four proposals [0, range, minor, major]: 5.8
	// down to 5.0, then 4.4 down to 4.0.
	msg := []byte{0x60, 0x60, 0xB0, 0x17, 0, 8, 8, 5, 0, 4, 4, 4, 0, 0, 0, 0, 0, 0, 0, 0}
	if _, err := c.Write(msg); err != nil {
		return fmt.Errorf("bolt handshake with %s: %w", addr, err)
	}
	var v [4]byte
	if _, err := io.ReadFull(c, v[:]); err != nil {
		return fmt.Errorf("bolt handshake with %s: %w", addr, err)
	}
	if v[3] != 4 && v[3] != 5 {
		return fmt.Errorf("bolt handshake with %s: server chose version %d.%d", addr, v[3], v[2])
	}
	return nil
}

// Stop shuts Neo4j down cleanly (SIGTERM to its process group, and its
// stdin closed) and waits until the JVM has exited; if ctx ends first it
// kills the process group. Stop is idempotent; it keeps Dir.
func (s *Server) Stop(ctx context.Context) error {
	s.stopOnce.Do(func() {
		_ = s.stdin.Close()
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-s.exited:
		case <-ctx.Done():
			_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
			<-s.exited
			s.stopErr = fmt.Errorf("stop neo4j: killed after %w", context.Cause(ctx))
		}
	})
	return s.stopErr
}

// Kill ends Neo4j at once (SIGKILL to its process group), as a crash
// would, and waits until it has exited. The database recovers at the
// next Start on the same Dir.
func (s *Server) Kill() error {
	s.stopOnce.Do(func() {
		_ = s.stdin.Close()
		if err := syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			s.stopErr = fmt.Errorf("kill neo4j: %w", err)
		}
		<-s.exited
	})
	return s.stopErr
}

// PID is the JVM's process id, which is also its process group's.
func (s *Server) PID() int { return s.cmd.Process.Pid }

// Restart starts a server again on s's Dir, port and password, after Stop
// or Kill; edit, if not nil, changes its other options first (its Conf).
func (s *Server) Restart(ctx context.Context, edit ...func(*Options)) (*Server, error) {
	o := s.opts
	o.Port = s.Port
	for _, e := range edit {
		e(&o)
	}
	return Start(ctx, o)
}
