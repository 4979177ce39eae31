// Command event-service stands in for the pods of the runbook's
// event-service Deployment in the local demo and end-to-end tests, where kwok
// runs no containers. It watches its Deployment and behaves like the version
// currently rolled out: a good version answers its endpoints, a bad one
// (an image tag ending in "-bad") answers 500 on all of them.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
)

func main() {
	kubeconfig := flag.String("kubeconfig", os.Getenv("KUBECONFIG"), "Path to the kubeconfig of the cluster holding the Deployment (default $KUBECONFIG).")
	namespace := flag.String("namespace", "production", "Namespace of the Deployment (default production).")
	deployment := flag.String("deployment", "event-service", "Name of the Deployment whose rolled-out version to play (default event-service).")
	listen := flag.String("listen-address", "127.0.0.1:8090", "Address to serve on (default 127.0.0.1:8090).")
	flag.Parse()
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, logger, *kubeconfig, *namespace, *deployment, *listen); err != nil {
		fmt.Fprintf(os.Stderr, "event-service: %v\n", err)
		os.Exit(1)
	}
}

// service is the behaviour of the version rolled out.
type service struct {
	image    atomic.Pointer[string]
	requests *prometheus.CounterVec
	mu       sync.Mutex
	events   map[string]map[string]any
	nextID   int
}

func (s *service) healthy() bool {
	img := s.image.Load()
	return img != nil && !strings.HasSuffix(*img, "-bad")
}

// degraded is a non-critical problem: an image tag ending in "-degraded"
// serves every endpoint but reports its pricing feature degraded.
func (s *service) degraded() bool {
	img := s.image.Load()
	return img != nil && strings.HasSuffix(*img, "-degraded")
}

func run(ctx context.Context, logger *slog.Logger, kubeconfig, namespace, name, listen string) error {
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return fmt.Errorf("load kubeconfig: %w", err)
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("create client: %w", err)
	}
	reg := prometheus.NewRegistry()
	s := &service{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "http_requests_total", Help: "HTTP requests served, by code, method and route.",
		}, []string{"code", "method", "route"}),
		events: map[string]map[string]any{"1": {"id": "1", "name": "Launch party"}},
		nextID: 2,
	}
	reg.MustRegister(s.requests, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "event_service_pricing_degraded", Help: "1 while the dynamic pricing feature is degraded (a non-critical problem).",
	}, func() float64 {
		if s.degraded() {
			return 1
		}
		return 0
	}))
	for _, code := range []string{"200", "201", "404", "500"} {
		s.requests.WithLabelValues(code, "GET", "/api/v1/events")
	}

	factory := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithNamespace(namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", name).String()
		}))
	inf := factory.Apps().V1().Deployments().Informer()
	track := func(obj any) {
		d, ok := obj.(*appsv1.Deployment)
		if !ok || len(d.Spec.Template.Spec.Containers) == 0 {
			return
		}
		img := d.Spec.Template.Spec.Containers[0].Image
		if old := s.image.Swap(&img); old == nil || *old != img {
			logger.Info("now playing", "image", img, "healthy", s.healthy())
		}
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    track,
		UpdateFunc: func(_, obj any) { track(obj) },
	}); err != nil {
		return fmt.Errorf("watch deployment: %w", err)
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()

	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /version", func(w http.ResponseWriter, _ *http.Request) {
		img := s.image.Load()
		fmt.Fprintf(w, "%v healthy=%v\n", deref(img), s.healthy())
	})
	s.route(mux, "GET /health/live", "/health/live", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, 200, map[string]string{"status": "live"}) })
	s.route(mux, "GET /health/ready", "/health/ready", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, 200, map[string]string{"status": "ready"}) })
	s.route(mux, "GET /api/v1/events", "/api/v1/events", s.list)
	s.route(mux, "GET /api/v1/events/{id}", "/api/v1/events/{id}", s.get)
	s.route(mux, "POST /api/v1/events", "/api/v1/events", s.create)

	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", listen, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	logger.Info("serving", "address", ln.Addr().String(), "deployment", namespace+"/"+name)
	go func() {
		<-ctx.Done()
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdownCtx)
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// route serves pattern, answering 500 whenever the version rolled out is bad,
// and counts every answer.
func (s *service) route(mux *http.ServeMux, pattern, route string, h http.HandlerFunc) {
	mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		rec := &recorder{ResponseWriter: w, code: 200}
		if !s.healthy() {
			writeJSON(rec, 500, map[string]string{"error": "internal error in " + deref(s.image.Load())})
		} else {
			h(rec, r)
		}
		s.requests.WithLabelValues(fmt.Sprint(rec.code), r.Method, route).Inc()
	})
}

func (s *service) list(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]map[string]any, 0, len(s.events))
	for _, e := range s.events {
		out = append(out, e)
	}
	writeJSON(w, 200, map[string]any{"events": out})
}

func (s *service) get(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.events[r.PathValue("id")]
	if !ok {
		writeJSON(w, 404, map[string]string{"error": "no such event"})
		return
	}
	writeJSON(w, 200, e)
}

func (s *service) create(w http.ResponseWriter, r *http.Request) {
	var e map[string]any
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&e); err != nil {
		writeJSON(w, 400, map[string]string{"error": err.Error()})
		return
	}
	s.mu.Lock()
	id := fmt.Sprint(s.nextID)
	s.nextID++
	e["id"] = id
	s.events[id] = e
	s.mu.Unlock()
	writeJSON(w, 201, e)
}

type recorder struct {
	http.ResponseWriter
	code int
}

func (r *recorder) WriteHeader(code int) { r.code = code; r.ResponseWriter.WriteHeader(code) }

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func deref(s *string) string {
	if s == nil {
		return "<unknown>"
	}
	return *s
}
