"""BibTeX entries of the plugin (Scipion parses this docstring; keys are used by _citations).
@misc{cryores,
  title = {cryores: local resolution of cryo-EM density maps from a single map, read from its local spectral evidence},
  author = {cryores developers},
  journal = {cryores software 0.1.0},
  year = {2026},
  note = {Python package with a deep-learning estimator and half-map local FSC (blocres-style)}
}

@article{Cardone2013,
  title = {One number does not fit all: mapping local variations in resolution in cryo-EM reconstructions},
  author = {Cardone, Giovanni and Heymann, J. Bernard and Steven, Alasdair C.},
  journal = {Journal of Structural Biology},
  volume = {184},
  number = {2},
  pages = {226--236},
  year = {2013},
  doi = {10.1016/j.jsb.2013.08.002}
}

@article{Kucukelbir2014,
  title = {Quantifying the local resolution of cryo-EM density maps},
  author = {Kucukelbir, Alp and Sigworth, Fred J. and Tagare, Hemant D.},
  journal = {Nature Methods},
  volume = {11},
  number = {1},
  pages = {63--65},
  year = {2014},
  doi = {10.1038/nmeth.2727}
}
"""
