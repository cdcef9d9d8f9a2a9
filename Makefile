# bpfoom.fleet: `make test` runs every tier, `make demo` boots the lab fleet.
# Both install what they need: Debian packages, and a virtual environment with
# the pinned tools of requirements-dev.txt, cached outside the repository.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

CACHE ?= $(HOME)/.cache/bpfoom-lab
VENV := $(CACHE)/venv-$(shell cat requirements-dev.txt | sha256sum | cut -c1-12)
export PATH := $(VENV)/bin:$(PATH)
export BPFOOM_LAB_CACHE := $(CACHE)
LABCTL := tests/lab/labctl
BUILD := $(CURDIR)/build
TEST_LAB := $(BUILD)/test-lab
COLLECTION_TREE := $(CACHE)/collection-tree/ansible_collections/bpfoom/fleet

.PHONY: help test unit sanity lint compile lab demo deps venv collection-tree clean

help:
	@echo "make test   run every tier: unit, sanity, lint, compile, lab (boots qemu hosts)"
	@echo "make demo   boot the lab fleet and roll policies out"
	@echo "make clean  remove build/ (caches stay in $(CACHE))"

test: unit sanity lint compile lab

deps:
	$(LABCTL) deps

venv: $(VENV)/.installed

# The directory name carries the hash of requirements-dev.txt: no file-date check.
$(VENV)/.installed:
	@echo "[make] virtual environment $(VENV)"
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $@

unit: venv
	pytest -q tests/unit

# Every catalog example through clang, directly and through the policy_build action.
compile: venv deps
	pytest -q tests/compile

# ansible-test wants the collection under ansible_collections/NAMESPACE/NAME.
collection-tree:
	rm -rf $(COLLECTION_TREE) && mkdir -p $(COLLECTION_TREE)
	git ls-files -co --exclude-standard | while read -r f; do [ -e "$$f" ] && echo "$$f"; done \
		| tar -cf - -T - | tar -xf - -C $(COLLECTION_TREE)

sanity: venv collection-tree
	tests/sanity/prepare-get-pip.sh
	cd $(COLLECTION_TREE) && ansible-test sanity --local --requirements --python 3.11 --color no

lint: venv
	ansible-lint --profile production
	antsibull-changelog lint

# Kernel and image first, so their progress shows before pytest starts.
lab: venv deps
	$(LABCTL) kernel --variant patched
	$(LABCTL) kernel --variant unpatched
	$(LABCTL) image
	rm -rf $(TEST_LAB)
	status=0; BPFOOM_TEST_LAB_DIR=$(TEST_LAB) pytest -m lab tests/kernel || status=$$?; \
	BPFOOM_LAB_DIR=$(TEST_LAB) $(LABCTL) down; \
	tests/lab/check-no-leftovers $(TEST_LAB); exit $$status

demo:
	@echo "make demo: not yet — the rollout arrives with issue 5. Boot the lab by hand:"
	@echo "  $(LABCTL) up --group web=2 --group legacy=1:unpatched"

clean:
	rm -rf $(BUILD)
