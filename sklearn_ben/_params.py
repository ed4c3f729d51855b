"""skorch-style prefixed parameters on keyword-only estimators.

skorch accepts ``optimizer__momentum=0.9`` in its constructor through
``**kwargs``; the house style keeps constructors keyword-only, so each prefix
has one dict-valued parameter instead (``optimizer_params``), and
:class:`PrefixedParamsMixin` maps the prefixed spelling onto it in
``set_params`` and ``get_params(deep=True)``. ``clone`` copies the dicts (it
uses ``get_params(deep=False)``), and ``GridSearchCV``, which calls
``set_params(optimizer__weight_decay=...)`` on a clone, works unchanged.

Prefixed keys that name an existing estimator parameter are that parameter
(``optimizer__lr`` is ``lr``), so one value never has two spellings that could
disagree.
"""

from sklearn_ben._training import callback_names

__all__ = ["PrefixedParamsMixin"]

#: prefix -> the dict-valued parameter that holds its keys
PREFIXES = {
    "optimizer": "optimizer_params",
    "criterion": "criterion_params",
    "iterator_train": "iterator_train_params",
}

#: prefixed key -> the estimator parameter it is
ALIASES = {
    "optimizer__lr": "lr",
    "optimizer__weight_decay": "weight_decay",
    "iterator_train__num_workers": "num_workers",
}


def _callback(item):
    return item[1] if isinstance(item, tuple) else item


class PrefixedParamsMixin:
    """``optimizer__*``, ``criterion__*``, ``iterator_train__*`` and
    ``callbacks__<name>__*`` keys for ``get_params``/``set_params``."""

    def get_params(self, deep=True):
        params = super().get_params(deep=deep)
        if not deep:
            return params
        # Values are not validated before fit: skip what is not a dict/list.
        for prefix, holder in PREFIXES.items():
            values = params.get(holder)
            for key, value in (values if isinstance(values, dict) else {}).items():
                params[f"{prefix}__{key}"] = value
        callbacks = params.get("callbacks")
        if isinstance(callbacks, dict):
            callbacks = list(callbacks.items())
        if not isinstance(callbacks, list | tuple):
            callbacks = []
        for name, item in zip(callback_names(callbacks), callbacks):
            cb = _callback(item)
            params[f"callbacks__{name}"] = cb
            if hasattr(cb, "get_params") and not isinstance(cb, type):
                for key, value in cb.get_params().items():
                    params[f"callbacks__{name}__{key}"] = value
        return params

    def set_params(self, **params):
        plain, prefixed, callbacks = {}, {}, {}
        for key, value in params.items():
            head = key.split("__", 1)[0]
            if key in ALIASES:
                plain[ALIASES[key]] = value
            elif "__" in key and head in PREFIXES:
                prefixed[key] = value
            elif "__" in key and head == "callbacks":
                callbacks[key] = value
            else:
                plain[key] = value
        super().set_params(**plain)
        for key, value in prefixed.items():
            prefix, sub = key.split("__", 1)
            holder = PREFIXES[prefix]
            values = getattr(self, holder)
            values = dict(values) if isinstance(values, dict) else {}
            values[sub] = value
            setattr(self, holder, values)
        for key, value in callbacks.items():
            self._set_callback_param(key, value)
        return self

    def _set_callback_param(self, key, value):
        """``callbacks__<name>`` replaces a callback; ``__<param>`` sets one."""
        _, rest = key.split("__", 1)
        name, _, param = rest.partition("__")
        callbacks = self.callbacks or []
        as_dict = isinstance(callbacks, dict)
        items = list(callbacks.items()) if as_dict else list(callbacks)
        names = callback_names(items)
        if name not in names:
            raise ValueError(
                f"Invalid parameter {key!r} for estimator {type(self).__name__}: "
                f"no callback named {name!r}; its callbacks are {names}."
            )
        position = names.index(name)
        if param:
            _callback(items[position]).set_params(**{param: value})
            return
        item = items[position]
        items[position] = (item[0], value) if isinstance(item, tuple) else value
        self.callbacks = dict(items) if as_dict else items
