package neo4j

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// JavaHomeEnv names a JDK for the launcher ahead of any other.
const JavaHomeEnv = "WEFT_NEO4J_JAVA_HOME"

// FindJava returns the home of a JDK (java and javac) of Java feature
// release min or later: $WEFT_NEO4J_JAVA_HOME, else $JAVA_HOME, else the
// JDK of the java in PATH, else the first fit among /usr/lib/jvm/*, where
// Debian and Temurin's packages put theirs.
func FindJava(min int) (string, error) {
	var cands []string
	for _, env := range []string{JavaHomeEnv, "JAVA_HOME"} {
		if h := os.Getenv(env); h != "" {
			cands = append(cands, h)
		}
	}
	if p, err := exec.LookPath("java"); err == nil {
		if r, err := filepath.EvalSymlinks(p); err == nil {
			cands = append(cands, filepath.Dir(filepath.Dir(r)))
		}
	}
	if ents, err := os.ReadDir("/usr/lib/jvm"); err == nil {
		for _, e := range ents {
			cands = append(cands, filepath.Join("/usr/lib/jvm", e.Name()))
		}
	}
	var seen []string
	for _, h := range cands {
		v, err := javaFeature(h)
		if err != nil {
			continue
		}
		seen = append(seen, fmt.Sprintf("%s (%d)", h, v))
		if v >= min {
			return h, nil
		}
	}
	if len(seen) == 0 {
		return "", fmt.Errorf("no JDK found (set %s or JAVA_HOME to a JDK %d or later)", JavaHomeEnv, min)
	}
	return "", fmt.Errorf("needs a JDK %d or later, and found only %s (set %s)", min, strings.Join(seen, ", "), JavaHomeEnv)
}

// javaFeature reads the feature release of the JDK at home from its
// release file, if home has both java and javac.
func javaFeature(home string) (int, error) {
	for _, b := range []string{"java", "javac"} {
		if st, err := os.Stat(filepath.Join(home, "bin", b)); err != nil || st.IsDir() {
			return 0, fmt.Errorf("%s: no bin/%s", home, b)
		}
	}
	f, err := os.Open(filepath.Join(home, "release"))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		v, ok := strings.CutPrefix(sc.Text(), "JAVA_VERSION=")
		if !ok {
			continue
		}
		v = strings.Trim(v, `"`)
		v = strings.TrimPrefix(v, "1.") // 1.8.0 is 8
		major, _, _ := strings.Cut(v, ".")
		return strconv.Atoi(major)
	}
	return 0, fmt.Errorf("%s/release: no JAVA_VERSION", home)
}
