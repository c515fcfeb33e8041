package main

// The fault tests' proxy in front of kube-apiserver (issue #19): it terminates TLS with the control plane's own
// serving certificate (so a kubeconfig pointing at it differs only in the port), passes the client's bearer token
// through (the client keeps its identity and RBAC), and answers a share of requests with 500 or 429 itself, or
// forwards them late. Faults change while it runs, through a plain-HTTP control port on 127.0.0.1:
//
//	PUT /faults {"error500": 0.3, "error429": 0.2, "delayMs": 300}   (shares of requests, 0..1, spread evenly;
//	                                                                  all 0 = faithful)
//	GET /stats                                                        requests seen and injected, per verb
//
// Watches are requests too: a watch that draws a fault is refused at its start; one that gets through streams as
// long as the API server keeps it open. Toxiproxy works on TCP and cannot answer with an HTTP status, which is
// what rate limiting and a failing API server look like to a client: hence a proxy of our own.

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"
)

type faults struct {
	Error500 float64 `json:"error500"`
	Error429 float64 `json:"error429"`
	DelayMs  int     `json:"delayMs"`
}

type stats struct {
	Requests    int            `json:"requests"`
	Injected500 int            `json:"injected500"`
	Injected429 int            `json:"injected429"`
	Delayed     int            `json:"delayed"`
	ByVerb      map[string]int `json:"byVerb"`
}

type faultProxy struct {
	mu     sync.Mutex
	faults faults
	stats  stats
	next   http.Handler
	// Faults owed (see ServeHTTP); reset when the faults change.
	debt500, debt429 float64
}

// verb names a request as the API server's audit log would, roughly: watch, list/get (GET), and the writes.
func verb(r *http.Request) string {
	if r.Method == http.MethodGet && r.URL.Query().Get("watch") != "" {
		return "watch"
	}
	return r.Method
}

func (p *faultProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	f := p.faults
	p.stats.Requests++
	p.stats.ByVerb[verb(r)]++
	// Shares kept exactly, not drawn at random: each request adds its shares to a debt, and a fault is due when a
	// debt reaches one (0.1 gives every tenth request). A random draw left a test with 29 requests and no 429 at
	// all (0.9^29 = 5 %).
	p.debt500 += f.Error500
	p.debt429 += f.Error429
	inject := 0
	switch {
	case p.debt500 >= 1-1e-9:
		p.debt500--
		inject = http.StatusInternalServerError
		p.stats.Injected500++
	case p.debt429 >= 1-1e-9:
		p.debt429--
		inject = http.StatusTooManyRequests
		p.stats.Injected429++
	case f.DelayMs > 0:
		p.stats.Delayed++
	}
	p.mu.Unlock()
	if inject != 0 {
		status(w, inject)
		return
	}
	if f.DelayMs > 0 {
		time.Sleep(time.Duration(f.DelayMs) * time.Millisecond)
	}
	p.next.ServeHTTP(w, r)
}

// status answers as kube-apiserver does: a metav1.Status, and Retry-After on 429 (as its max-in-flight filter).
func status(w http.ResponseWriter, code int) {
	reason, message := "InternalError", "injected by the fault proxy: internal error"
	if code == http.StatusTooManyRequests {
		reason, message = "TooManyRequests", "injected by the fault proxy: too many requests, please try again later"
		w.Header().Set("Retry-After", "1")
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"kind": "Status", "apiVersion": "v1", "metadata": map[string]any{}, "status": "Failure",
		"message": message, "reason": reason, "code": code,
	})
}

func (p *faultProxy) control(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case r.URL.Path == "/faults" && r.Method == http.MethodPut:
		var f faults
		if err := json.NewDecoder(r.Body).Decode(&f); err != nil || f.Error500 < 0 || f.Error429 < 0 || f.Error500+f.Error429 > 1 || f.DelayMs < 0 {
			http.Error(w, fmt.Sprintf("faults: want {error500, error429 (shares, sum <= 1), delayMs >= 0}: %v", err), http.StatusBadRequest)
			return
		}
		p.faults = f
		p.debt500, p.debt429 = 0, 0
		logf("faultproxy: faults now %+v", f)
		_ = json.NewEncoder(w).Encode(p.faults)
	case r.URL.Path == "/stats" && r.Method == http.MethodGet:
		_ = json.NewEncoder(w).Encode(p.stats)
	default:
		http.NotFound(w, r)
	}
}

// runFaultProxy: kube-testenv faultproxy --dir DIR --upstream https://127.0.0.1:PORT. Prints one line,
// "https://127.0.0.1:P http://127.0.0.1:C" (the proxy and its control port), and serves until killed.
func runFaultProxy(args []string) error {
	fs := flag.NewFlagSet("faultproxy", flag.ContinueOnError)
	dir := fs.String("dir", "", "the control plane's directory (the CA and serving certificate in its pki/)")
	upstream := fs.String("upstream", "", "kube-apiserver's URL")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" || *upstream == "" {
		return fmt.Errorf("faultproxy: --dir and --upstream are required")
	}
	target, err := url.Parse(*upstream)
	if err != nil {
		return fmt.Errorf("faultproxy: --upstream: %w", err)
	}
	caPEM, err := os.ReadFile(filepath.Join(*dir, "pki", "ca.crt"))
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	cert, err := tls.LoadX509KeyPair(filepath.Join(*dir, "pki", "apiserver.crt"), filepath.Join(*dir, "pki", "apiserver.key"))
	if err != nil {
		return err
	}
	forward := httputil.NewSingleHostReverseProxy(target)
	forward.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 64}
	forward.FlushInterval = -1 // watches stream event by event
	p := &faultProxy{next: forward, stats: stats{ByVerb: map[string]int{}}}

	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	controlListener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	server := &http.Server{Handler: p, TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}}}
	go func() {
		_ = http.Serve(controlListener, http.HandlerFunc(p.control))
	}()
	fmt.Printf("https://%s http://%s\n", listener.Addr(), controlListener.Addr())
	watchParent()
	return server.ServeTLS(listener, "", "")
}
