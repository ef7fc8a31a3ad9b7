"""Data for training and evaluation: from text files to padded batches of token ids.

    parallel.py      line-aligned parallel text (plain or gzip); Multi30k: find, load, download
    tokenizer.py     one joint BPE vocabulary for source and target (the `tokenizers` library)
    symbols.py       the vocabulary of a synthetic task: numbered symbols as text
    sources.py       text -> the source ids a model reads (unknown symbols, long lines)
    batching.py      batches by token count with length bucketing (Section 5.1); collate
    synthetic.py     toy sequences (copy, reverse, sort) that need no download
    translation.py   a translation corpus made ready for training: pairs, BPE, batches
    prepared.py      a corpus tokenized once: memory-mapped ids, offsets, a manifest
    wmt14.py         WMT 2014 English-German: download, check, extract, clean, prepare

Import the modules directly (`from transformer.data.parallel import read_parallel`);
this file deliberately imports nothing, so that loading one module never pulls in another.
"""
