module herald.invalid/herald

go 1.19
