.PHONY: install test demo lint bench soak clean

install: .venv/.installed

.venv/.installed: pyproject.toml scripts/install.sh
	scripts/install.sh
	touch $@

test: install
	scripts/test.sh

demo: install
	scripts/demo.sh

lint: install
	scripts/lint.sh

bench: install
	scripts/bench.sh

soak: install
	scripts/soak.sh

clean:
	rm -rf .venv build *.egg-info
