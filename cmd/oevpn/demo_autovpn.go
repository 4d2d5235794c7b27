package main

import "io"

func (d *demoWorld) partAutoVPN(out io.Writer) error { return nil }
