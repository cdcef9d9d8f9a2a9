# bpfoom.fleet: `make test` runs every tier, `make demo` boots the lab fleet.
# Both install what they need: Debian packages, and a virtual environment with
# the pinned tools of requirements-dev.txt, cached outside the repository.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

CACHE ?= $(HOME)/.cache/bpfoom-lab
VENV := $(CACHE)/venv-$(shell cat requirements-dev.txt | sha256sum | cut -c1-12)
# galaxy-importer pins its own ansible-lint and linters: a virtual environment of its own.
IMPORTER_VENV := $(CACHE)/venv-importer-$(shell cat requirements-importer.txt | sha256sum | cut -c1-12)
export PATH := $(VENV)/bin:$(PATH)
export BPFOOM_LAB_CACHE := $(CACHE)
LABCTL := tests/lab/labctl
BUILD := $(CURDIR)/build
TEST_LAB := $(BUILD)/test-lab
# One per checkout (keyed by its path): two checkouts' sanity runs must not rebuild each other's tree.
COLLECTION_TREE := $(CACHE)/collection-tree/$(shell echo $(CURDIR) | sha256sum | cut -c1-12)/ansible_collections/bpfoom/fleet
# ansible-playbook bpfoom.fleet.NAME finds this checkout as the collection through a link.
COLLECTION_LINK := $(BUILD)/collections/ansible_collections/bpfoom/fleet
export ANSIBLE_COLLECTIONS_PATH := $(BUILD)/collections

.PHONY: help test unit sanity matrix lint docs prometheus-rules compile lab lab-artifacts molecule ee-context importer demo demo-stop deps venv collection-link collection-tree clean

help:
	@echo "make test   run every tier: unit, sanity, lint, compile, lab (boots qemu hosts)"
	@echo "make demo   boot the lab fleet and roll policies out (make demo-stop stops it)"
	@echo "make clean  remove build/ (caches stay in $(CACHE))"

test: unit sanity matrix lint docs prometheus-rules compile ee-context importer lab molecule

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

collection-link:
	@[ -L $(COLLECTION_LINK) ] || { mkdir -p $(dir $(COLLECTION_LINK)) && ln -sfn $(CURDIR) $(COLLECTION_LINK); }

# ansible-test wants the collection under ansible_collections/NAMESPACE/NAME.
collection-tree:
	rm -rf $(COLLECTION_TREE) && mkdir -p $(COLLECTION_TREE)
	git ls-files -co --exclude-standard | while read -r f; do [ -e "$$f" ] && echo "$$f"; done \
		| tar -cf - -T - | tar -xf - -C $(COLLECTION_TREE)

sanity: venv collection-tree
	tests/sanity/prepare-get-pip.sh
	cd $(COLLECTION_TREE) && ansible-test sanity --local --requirements --python 3.11 --color no

# The ansible-core releases after requirements-dev.txt's (2.19, on this machine's Python 3.11), each on Debian
# trixie's Python 3.13: a root built from this machine's apt sources and cached by content
# (tests/lab/fleetlab/controller.py), one virtual environment per release. Each runs the sanity and unit tiers.
MATRIX_CORES := 2.20 2.21 2.22
# The lab's playbooks run on the newest stable release (tests/policytools.py: BPFOOM_TEST_CONTROLLER).
LAB_CORE := 2.21
# 2.22.0rc1's pylint requirements take dill from a GitHub archive (not a registry: unreachable here).
MATRIX_SANITY_OPTIONS_2.22 := --skip-test pylint
matrix: venv deps collection-tree
	$(foreach core,$(MATRIX_CORES),\
		echo "[make] ansible-core $(core) on Python 3.13: sanity $(MATRIX_SANITY_OPTIONS_$(core)), unit"; \
		$(LABCTL) controller $(core) -- sh -ec 'tests/sanity/prepare-get-pip.sh && cd $(COLLECTION_TREE) && \
			ansible-test sanity --local --requirements --python 3.13 --color no $(MATRIX_SANITY_OPTIONS_$(core))'; \
		$(LABCTL) controller $(core) -- pytest -q tests/unit;)

lint: venv
	env -u ANSIBLE_COLLECTIONS_PATH ansible-lint --profile production   # it installs the collection in .ansible/ itself
	antsibull-changelog lint

# The docs as users read them: antsibull-docs' lint of every plugin's docs and of the guides
# (docs/docsite/), then the docsite Sphinx builds from the collection, plugin pages and guides, in
# build/docsite/build/html. Offline: no intersphinx inventory (docs.ansible.com is not reachable from
# here), so the labels of ansible-core's own docs that antsibull-docs' pages link to stay undefined;
# any other warning fails.
DOCSITE := $(BUILD)/docsite
ANSIBLE_CORE_LABELS := action_plugins|callback_plugins|common_return_values|ansible_configuration_settings
docs: venv collection-link
	antsibull-docs lint-collection-docs --plugin-docs $(COLLECTION_LINK)
	rm -rf $(DOCSITE) && mkdir -m 0755 -p $(DOCSITE)
	antsibull-docs sphinx-init --use-current --dest-dir $(DOCSITE) bpfoom.fleet >/dev/null
	echo "intersphinx_mapping = {}  # offline: see the Makefile" >> $(DOCSITE)/conf.py
	chmod 0755 $(DOCSITE)/rst      # antsibull-docs writes only where nobody else may
	cd $(DOCSITE) && antsibull-docs --config-file antsibull-docs.cfg collection --use-current --dest-dir rst bpfoom.fleet
	cd $(DOCSITE) && sphinx-build -M html rst build -c . -q -w warnings.txt
	! grep -v -E "undefined label: '($(ANSIBLE_CORE_LABELS))'" $(DOCSITE)/warnings.txt
	@echo "[make] docsite in $(DOCSITE)/build/html/collections/bpfoom/fleet/index.html"

# The shipped alert rules: valid for Prometheus, and firing as tests/prometheus/rules_test.yml says.
prometheus-rules:
	bin=$$($(LABCTL) prometheus); $$bin/promtool check rules prometheus/bpfoom.rules.yml; \
		$$bin/promtool test rules tests/prometheus/rules_test.yml

# The lab's kernels and host images, built or reused (cached by content), before anything boots: Debian 12
# (base), Debian 13 (trixie), Debian 12 with Debian's own kernels (stock: the lab tier's hosts without the hook).
lab-artifacts: deps
	$(LABCTL) kernel --variant patched
	$(LABCTL) kernel --variant unpatched
	$(LABCTL) image
	$(LABCTL) image --variant trixie
	$(LABCTL) image --variant stock

# Every lab test, on a fleet of its own (build/test-lab), stopped on any outcome; the playbooks on LAB_CORE.
lab: venv collection-link lab-artifacts
	rm -rf $(TEST_LAB)
	status=0; BPFOOM_TEST_LAB_DIR=$(TEST_LAB) BPFOOM_TEST_CONTROLLER=$(LAB_CORE) pytest -m lab tests/kernel tests/fleet \
		|| status=$$?; \
	BPFOOM_LAB_DIR=$(TEST_LAB) $(LABCTL) down; \
	tests/lab/check-no-leftovers $(TEST_LAB); exit $$status

# The rollout on lab hosts through molecule (extensions/molecule/default): its own fleet, stopped on any outcome.
# On failure, the failed tasks are repeated last, where a CI log's tail shows them.
molecule: venv collection-link lab-artifacts
	rm -rf $(BUILD)/molecule-lab
	cd extensions && status=0; NO_COLOR=1 molecule test 2>&1 | tee $(BUILD)/molecule.log || status=$$?; \
	BPFOOM_LAB_DIR=$(BUILD)/molecule-lab ../$(LABCTL) down; \
	../tests/lab/check-no-leftovers $(BUILD)/molecule-lab; \
	if [ $$status -ne 0 ]; then echo "[make] molecule failed at (full log: $(BUILD)/molecule.log):"; \
		grep -E -A4 '^(fatal|failed):|FAILED!' $(BUILD)/molecule.log | cut -c1-2000 | tail -60 || true; fi; \
	if grep -n -A3 "DEPRECATION WARNING" $(BUILD)/molecule.log; then echo "[make] molecule: deprecations to fix"; \
		status=1; fi; \
	exit $$status

# The AWX execution environment's build context (no container engine here: the image is not built).
ee-context: venv
	rm -rf $(BUILD)/ee $(BUILD)/ee-context && mkdir -p $(BUILD)/ee
	ansible-galaxy collection build --force --output-path $(BUILD)/ee .
	mv $(BUILD)/ee/bpfoom-fleet-*.tar.gz $(BUILD)/ee/bpfoom-fleet.tar.gz
	python3 tests/release/check_tarball_links.py $(BUILD)/ee/bpfoom-fleet.tar.gz
	ansible-builder create -f ee/execution-environment.yml -c $(BUILD)/ee-context
	# The collection's own metadata, as ansible-builder reads it from the installed collection.
	ansible-galaxy collection install --force -p $(BUILD)/ee/installed $(BUILD)/ee/bpfoom-fleet.tar.gz >/dev/null 2>&1
	ansible-builder introspect --sanitize $(BUILD)/ee/installed | tee $(BUILD)/ee/introspect.txt
	grep -q "libbpf-devel" $(BUILD)/ee/introspect.txt && grep -q "Jinja2" $(BUILD)/ee/introspect.txt
	@echo "[make] build context in $(BUILD)/ee-context (ansible-builder build -c $(BUILD)/ee-context)"

$(IMPORTER_VENV)/.installed:
	@echo "[make] virtual environment $(IMPORTER_VENV)"
	python3 -m venv $(IMPORTER_VENV)
	$(IMPORTER_VENV)/bin/pip install -q --disable-pip-version-check -r requirements-importer.txt
	touch $@

# Galaxy's own import of the collection ee-context built: galaxy-importer, its ansible-test step off (it
# pulls a container image from a registry). Any ERROR line fails the step, as well as a failed import.
importer: ee-context $(IMPORTER_VENV)/.installed
	printf '[galaxy-importer]\nRUN_ANSIBLE_TEST = False\n' > $(BUILD)/ee/galaxy-importer.cfg
	# It reads namespace, name and version from the file's name.
	cp $(BUILD)/ee/bpfoom-fleet.tar.gz $(BUILD)/ee/bpfoom-fleet-$(shell awk '/^version:/ {print $$2}' galaxy.yml).tar.gz
	cd $(BUILD)/ee && PATH=$(IMPORTER_VENV)/bin:$$PATH GALAXY_IMPORTER_CONFIG=$(BUILD)/ee/galaxy-importer.cfg \
		python -m galaxy_importer.main bpfoom-fleet-*.*.tar.gz 2>&1 | tee importer.log
	! grep -n "ERROR" $(BUILD)/ee/importer.log
	grep -q "Importer processing completed successfully" $(BUILD)/ee/importer.log

demo: venv collection-link lab-artifacts
	python3 tests/lab/demo/demo.py

demo-stop:
	$(LABCTL) down

clean:
	rm -rf $(BUILD)
