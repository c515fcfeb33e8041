// argocd-lua runs Argo CD resource health scripts the way Argo CD's application controller runs them, for
// jpki-access's tests (tests/argocd_health.rs). Argo CD (util/lua, runLua) creates a gopher-lua state with
// SkipOpenLibs unless the override sets useOpenLibs, then opens only the package, base and table libraries (and a
// reduced os library; this runner gives none, so a script that needs os fails here too), sets the object as the
// global `obj`, runs the script with a one-second timeout and reads the table it returns as {status, message}.
// Debian's lua5.4, which the tests used before, has the whole standard library and could not see a script calling
// string.match fail in Argo CD. Nothing here ships with the operator.
//
// Input on stdin: one JSON object per line, {"script": "...", "obj": {...}}. Output: one JSON object per line,
// {"status": "...", "message": "..."} or {"error": "..."}.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	lua "github.com/yuin/gopher-lua"
)

type request struct {
	Script string      `json:"script"`
	Obj    interface{} `json:"obj"`
}

type answer struct {
	Status  string `json:"status,omitempty"`
	Message string `json:"message,omitempty"`
	Error   string `json:"error,omitempty"`
}

// The health codes Argo CD accepts; any other status becomes Unknown, as Argo CD does.
var validStatus = map[string]bool{"Healthy": true, "Progressing": true, "Degraded": true, "Suspended": true, "Missing": true, "Unknown": true}

// toLua turns a decoded JSON value into Lua values: objects and arrays become tables (arrays from index 1).
func toLua(l *lua.LState, value interface{}) lua.LValue {
	switch v := value.(type) {
	case bool:
		return lua.LBool(v)
	case float64:
		return lua.LNumber(v)
	case string:
		return lua.LString(v)
	case []interface{}:
		t := l.NewTable()
		for _, item := range v {
			t.Append(toLua(l, item))
		}
		return t
	case map[string]interface{}:
		t := l.NewTable()
		for key, item := range v {
			t.RawSetString(key, toLua(l, item))
		}
		return t
	default:
		return lua.LNil
	}
}

func run(req request) answer {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{{lua.LoadLibName, lua.OpenPackage}, {lua.BaseLibName, lua.OpenBase}, {lua.TabLibName, lua.OpenTable}} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.open), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			return answer{Error: fmt.Sprintf("opening %q: %v", lib.name, err)}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", toLua(l, req.Obj))
	if err := l.DoString(req.Script); err != nil {
		return answer{Error: err.Error()}
	}
	table, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		return answer{Error: fmt.Sprintf("expect table output from Lua script, not %s", l.Get(-1).Type())}
	}
	status, _ := table.RawGetString("status").(lua.LString)
	message, _ := table.RawGetString("message").(lua.LString)
	if !validStatus[string(status)] {
		return answer{Status: "Unknown", Message: "Lua returned an invalid health status"}
	}
	return answer{Status: string(status), Message: string(message)}
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 64<<20)
	out := json.NewEncoder(os.Stdout)
	for in.Scan() {
		var req request
		if err := json.Unmarshal(in.Bytes(), &req); err != nil {
			fmt.Fprintf(os.Stderr, "argocd-lua: bad request: %v\n", err)
			os.Exit(2)
		}
		if err := out.Encode(run(req)); err != nil {
			fmt.Fprintf(os.Stderr, "argocd-lua: %v\n", err)
			os.Exit(1)
		}
	}
	if err := in.Err(); err != nil {
		fmt.Fprintf(os.Stderr, "argocd-lua: reading stdin: %v\n", err)
		os.Exit(1)
	}
}
