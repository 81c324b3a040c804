"""`!function` hooks of the test tasks: lm-eval imports this file itself."""


def process_docs(dataset):
    return dataset.map(lambda doc: {"question": f"{doc['a']} + {doc['b']}"})


def doc_to_text(doc):
    return f"Question: what is {doc['question']}?\nAnswer:"
