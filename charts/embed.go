package charts

import "embed"

// FS holds the chart directory "weft". The all: prefix keeps
// templates/_helpers.tpl and .helmignore, which embed skips by default.
//
//go:embed all:weft
var FS embed.FS

// ChartDir is the chart's directory in FS.
const ChartDir = "weft"
