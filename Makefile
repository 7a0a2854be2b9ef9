.PHONY: demo test bench
demo:
	scripts/bootstrap.sh demo
test:
	scripts/bootstrap.sh test
bench:
	.venv/bin/keycam bench keyed --dataset mnist --profile full --limit 2000 --json bench-keyed.json
