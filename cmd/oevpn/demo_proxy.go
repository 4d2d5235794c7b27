package main

import "io"

func (d *demoWorld) partProxy(out io.Writer) error { return nil }
