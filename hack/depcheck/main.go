package main

import (
	_ "github.com/google/cel-go/cel"
	_ "github.com/prometheus/alertmanager/pkg/labels"
	_ "github.com/prometheus/alertmanager/template"
	_ "github.com/fsnotify/fsnotify"
)

func main() {}
