"""Adept: a small open language model made an expert in one industry, for many tenants.

The kernel package. It imports no Ray, torch or kopf at module level, so every other
package (services, training, operators) may import it cheaply.
"""

__version__ = "0.1.0"
