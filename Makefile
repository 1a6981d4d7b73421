# Two commands on a fresh machine (see README):
#   make demo   set up .venv and run cryores on the EMD-5168 map
#   make test   set up the environments, run ruff and every test
# torch is pinned by constraints.txt to the CPU wheel on this machine's disk.

PYTHON ?= python3
VENV := .venv
OLDEST := .venv-oldest
SCIPION := .venv-scipion
PIP_FLAGS := -q --disable-pip-version-check

.PHONY: setup demo test test-core test-oldest test-scipion lint bench clean

$(VENV)/.installed: pyproject.toml training/pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install $(PIP_FLAGS) -c constraints.txt -e '.[test]' -e training
	touch $@

$(OLDEST)/.installed: pyproject.toml constraints-oldest.txt
	$(PYTHON) -m venv $(OLDEST)
	$(OLDEST)/bin/pip install $(PIP_FLAGS) -c constraints-oldest.txt -e '.[test]'
	touch $@

# The Scipion plugin in its own venv: Scipion pins old numpy/scipy/mrcfile (constraints-oldest.txt
# holds the same pins) and the Scipion release it is tested with (constraints-scipion.txt).
$(SCIPION)/.installed: pyproject.toml scipion_plugin/pyproject.toml constraints-oldest.txt constraints-scipion.txt
	$(PYTHON) -m venv $(SCIPION)
	$(SCIPION)/bin/pip install $(PIP_FLAGS) -c constraints-oldest.txt -c constraints-scipion.txt \
		scipion-pyworkflow scipion-em -e . -e 'scipion_plugin[test]'
	touch $@

setup: $(VENV)/.installed

demo: $(VENV)/.installed
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash scripts/demo.sh

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

test-core: $(VENV)/.installed
	$(VENV)/bin/pytest -q tests

# The core's tests against Scipion's pins (numpy 1.26.1, scipy 1.10.0, mrcfile 1.4.3).
test-oldest: $(OLDEST)/.installed
	$(OLDEST)/bin/pytest -q -p no:cacheprovider tests --ignore=tests/training

# The plugin's protocol and viewer in a real, headless Scipion project.
test-scipion: $(SCIPION)/.installed
	$(SCIPION)/bin/pytest -q -p no:cacheprovider scipion_plugin/tests

# The ChimeraX bundle built, installed and run in a real headless UCSF ChimeraX 1.7.1 (the kit in
# ../shared/chimerax, OSMesa off-screen rendering): cryores and its CPU torch go into ChimeraX's
# Python with chimerax_bundle/constraints-chimerax.txt (setuptools<81 keeps the pkg_resources
# that 1.7's bundle builder imports; pkginfo>=1.12 reads the metadata newer setuptools writes).
CHIMERAX := .venv-chimerax
CX_KIT := ../shared/chimerax
CX_PYTHON ?= python3.11
$(CHIMERAX)/.installed: pyproject.toml constraints.txt chimerax_bundle/constraints-chimerax.txt
	PYTHON=$(CX_PYTHON) bash $(CX_KIT)/setup.sh $(CURDIR)/$(CHIMERAX) --offscreen
	$(CHIMERAX)/bin/python -m pip install $(PIP_FLAGS) -c constraints.txt -c chimerax_bundle/constraints-chimerax.txt \
		. "pkginfo>=1.12,<2" pytest
	touch $@

.PHONY: test-chimerax
test-chimerax: $(CHIMERAX)/.installed
	$(CHIMERAX)/bin/python -m pip install $(PIP_FLAGS) --no-deps --force-reinstall .
	$(CHIMERAX)/bin/python -m pytest -q -p no:cacheprovider tests/chimerax

test: lint test-core test-oldest test-chimerax test-scipion

bench: $(VENV)/.installed
	$(VENV)/bin/python benchmarks/predict_speed.py --big 512

clean:
	rm -rf $(VENV) $(OLDEST) $(SCIPION) demo

# The shipped model (cryores-v3), reproducibly; every step resumes if stopped (about 160 min on 2
# shared CPU cores): simulated samples of the training and validation structures (BM5 + the PDB
# entries of training/structures/extra and /more, families "bfactor" and "cliff", coarse bfactor maps at 4-6 Å/px, and bfactor maps Fourier-cropped 1.2-2x) -> variants
# users hold -> spectral feature rows; real EMDB maps cut at X -> lower-bound rows -> SpectralNet -> evaluation
# on unseen structures, the held-out "lowpass" family and real EMDB maps (none of them a training
# map) -> install.
# Samples are seeded per (seed, structure, index), so the rows come out the same; the fit runs on one
# thread because float sums in matrix products depend on the thread count, so the weights do too.
# Bit-equal on one machine; on another CPU (measured 2026-12-06; FFT and BLAS libraries pick kernels by CPU) the rows
# moved in their last bits, so the weights differ slightly and the metrics within a fit's noise (training/README).
ROWS := training/data/v3/rows
# one input layout (cryores.spectral.input_layout) for every row folder the fit reads
INPUTS := neighbourhood
STRUCTURES := ../shared/data/structures/bm5 training/structures/extra training/structures/more
model: $(VENV)/.installed
	$(VENV)/bin/cryores-train rows $(STRUCTURES) -o $(ROWS) --family bfactor --per-structure 6 --splits train,val --inputs $(INPUTS)
	$(VENV)/bin/cryores-train rows $(STRUCTURES) -o $(ROWS) --family cliff --per-structure 3 --splits train,val --inputs $(INPUTS)
	$(VENV)/bin/cryores-train rows $(STRUCTURES) -o $(ROWS) --family bfactor --coarse --per-structure 2 --splits train,val --inputs $(INPUTS)
	$(VENV)/bin/cryores-train rows $(STRUCTURES) -o $(ROWS) --family bfactor --cropped --per-structure 3 --splits train,val --inputs $(INPUTS)
	$(VENV)/bin/cryores-train real-rows training/real_maps -o $(ROWS)/real --per-map 24 --inputs $(INPUTS)
	OMP_NUM_THREADS=1 $(VENV)/bin/cryores-train fit training/configs/v3.json
	$(VENV)/bin/cryores-train evaluate-v3 training/configs/v3.json $(STRUCTURES) --docs docs
	$(VENV)/bin/cryores-train install training/runs/v3/model/default.json
