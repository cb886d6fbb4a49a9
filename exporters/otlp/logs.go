package otlp

import (
	"context"
	"path"
	"strconv"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/log"
	sdklog "go.opentelemetry.io/otel/sdk/log"
	"go.opentelemetry.io/otel/sdk/resource"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"

	"github.com/weftobs/weft/streams/schema"
)

// Event names of the log records.
const (
	EventProcessExec = "process.exec"
	EventProcessExit = "process.exit"
)

// AttrProcessSignal is the signal that ended a process; the semantic
// conventions have no attribute for it.
const AttrProcessSignal = "weft.process.exit.signal"

// logMapper turns process events into log records. The SDK builds the
// records (a LoggerProvider per resource, so each record carries its
// pod's resource); a capturing processor hands them back synchronously
// instead of batching them, so the stage exports them itself and acks
// their messages only after the backend accepted them.
type logMapper struct {
	res *resources

	mu        sync.Mutex
	providers map[*resource.Resource]log.Logger
	pods      map[string]*schema.Pod // by uid, from PodEvents on the stream
	maxPods   int
}

func newLogMapper(res *resources) *logMapper {
	return &logMapper{res: res, providers: map[*resource.Resource]log.Logger{}, pods: map[string]*schema.Pod{}, maxPods: 1 << 16}
}

// observePod keeps what the stream says about a pod, so later process
// events of the pod carry its names. Deleted pods are kept: their last
// processes exit after the delete.
func (m *logMapper) observePod(ev *schema.PodEvent) {
	p := ev.GetPod()
	if p.GetUid() == "" {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.pods) >= m.maxPods {
		clear(m.pods)
	}
	m.pods[p.GetUid()] = p
}

func (m *logMapper) logger(res *resource.Resource) log.Logger {
	m.mu.Lock()
	defer m.mu.Unlock()
	l, ok := m.providers[res]
	if !ok {
		if len(m.providers) >= 4096 {
			clear(m.providers)
		}
		lp := sdklog.NewLoggerProvider(sdklog.WithResource(res), sdklog.WithProcessor(captureProcessor{}))
		l = lp.Logger(ScopeName, log.WithSchemaURL(semconv.SchemaURL))
		m.providers[res] = l
	}
	return l
}

type captureKey struct{}

// captureProcessor appends each emitted record to the slice the emitting
// context carries.
type captureProcessor struct{}

func (captureProcessor) Enabled(context.Context, sdklog.EnabledParameters) bool { return true }
func (captureProcessor) Shutdown(context.Context) error                         { return nil }
func (captureProcessor) ForceFlush(context.Context) error                       { return nil }
func (captureProcessor) OnEmit(ctx context.Context, r *sdklog.Record) error {
	if dst, ok := ctx.Value(captureKey{}).(*[]sdklog.Record); ok {
		*dst = append(*dst, r.Clone())
	}
	return nil
}

// appendRecords appends the log records of the process events in b to dst
// and remembers the pods b announces.
func (m *logMapper) appendRecords(dst []sdklog.Record, b *schema.EventBatch) []sdklog.Record {
	ctx := context.WithValue(context.Background(), captureKey{}, &dst)
	node := b.GetOrigin().GetNode()
	for _, ev := range b.GetEvents() {
		switch body := ev.GetBody().(type) {
		case *schema.Event_Pod:
			m.observePod(body.Pod)
		case *schema.Event_Exec:
			t := ev.GetTask()
			var r log.Record
			r.SetEventName(EventProcessExec)
			r.SetBody(attribute.StringValue("exec " + execName(t)))
			attrs := processAttributes(t)
			if argv := body.Exec.GetArgv(); len(argv) > 0 {
				attrs = append(attrs, semconv.ProcessCommandArgs(argv...))
			}
			m.emit(ctx, node, ev, &r, attrs)
		case *schema.Event_Exit:
			t := ev.GetTask()
			x := body.Exit
			var r log.Record
			r.SetEventName(EventProcessExit)
			r.SetBody(attribute.StringValue("exit " + execName(t) + " " + strconv.Itoa(int(x.GetExitCode()))))
			attrs := append(processAttributes(t), semconv.ProcessExitCode(int(x.GetExitCode())))
			if x.GetSignal() != 0 {
				attrs = append(attrs, attribute.Int(AttrProcessSignal, int(x.GetSignal())))
			}
			if lt := x.GetLifetimeNs(); lt > 0 {
				created := time.Unix(0, int64(ev.GetTimeUnixNano())-int64(lt)).UTC()
				attrs = append(attrs, semconv.ProcessCreationTime(created.Format(time.RFC3339Nano)))
			}
			m.emit(ctx, node, ev, &r, attrs)
		}
	}
	return dst
}

func (m *logMapper) emit(ctx context.Context, node string, ev *schema.Event, r *log.Record, attrs []attribute.KeyValue) {
	t := ev.GetTask()
	m.mu.Lock()
	pod := m.pods[t.GetPodUid()]
	m.mu.Unlock()
	r.SetTimestamp(time.Unix(0, int64(ev.GetTimeUnixNano())))
	r.SetObservedTimestamp(time.Now())
	r.SetSeverity(log.SeverityInfo)
	r.SetSeverityText("INFO")
	r.AddAttributes(attrs...)
	m.logger(m.res.forTask(node, t, pod)).Emit(ctx, *r)
}

func execName(t *schema.Task) string {
	if t.GetExe() != "" {
		return path.Base(t.GetExe())
	}
	return t.GetComm()
}

// processAttributes are the process.* attributes of t.
func processAttributes(t *schema.Task) []attribute.KeyValue {
	attrs := []attribute.KeyValue{semconv.ProcessPID(int(t.GetPid()))}
	if t.GetPpid() != 0 {
		attrs = append(attrs, semconv.ProcessParentPID(int(t.GetPpid())))
	}
	if n := execName(t); n != "" {
		attrs = append(attrs, semconv.ProcessExecutableName(n))
	}
	if t.GetExe() != "" {
		attrs = append(attrs, semconv.ProcessExecutablePath(t.GetExe()))
	}
	if t.GetComm() != "" {
		attrs = append(attrs, semconv.ProcessCommand(t.GetComm()))
	}
	attrs = append(attrs, semconv.ProcessUserID(int(t.GetUid())))
	return attrs
}

var _ sdklog.Processor = captureProcessor{}
