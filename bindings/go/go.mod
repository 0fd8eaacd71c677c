module github.com/herald-events/herald/bindings/go

go 1.19
