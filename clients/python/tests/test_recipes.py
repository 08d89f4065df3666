"""The recipes of README.md, run: the plain-script one as it is, the
Django one in its plain version (recipes/django/plain.py: what the
management command does once Django is set up, with the same stages
module). Each through the real warren and broker."""

import os
import sys
import unittest

from harness import Pipeline

RECIPES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipes")


class Recipes(unittest.TestCase):
    def test_the_plain_script_recipe(self):
        plain = os.path.join(RECIPES, "plain", "worker.py")
        p = Pipeline("", """
            resize:
              exec: [%s, %s]
              retry: { attempts: 2, backoff: [100ms] }
              outputs: [caption]
            caption:
              exec: [%s, %s]
              outputs: [out]
            out:
              sink: { path: {dir}/out.jsonl }
            """ % (sys.executable, plain, sys.executable, plain), prefix="tpyr")
        self.addCleanup(p.close)
        code, said = p.run([{"photo": "cat.jpg", "width": 800}, {"photo": "dog.jpg"}])
        self.assertEqual(code, 1, said)  # the photo without a width
        self.assertEqual(p.results(), [{"photo": "cat.jpg", "caption": "cat.jpg, 400px wide"}], said)
        self.assertIn("resizing 800", said)
        self.assertIn("no width", p.dead("resize"))

    def test_the_django_recipe_in_its_plain_version(self):
        django = os.path.join(RECIPES, "django", "plain.py")
        p = Pipeline("", """
            invoice:
              exec: [%s, %s]
              retry: { attempts: 2, backoff: [100ms] }
              outputs: [out]
            out:
              sink: { path: {dir}/out.jsonl }
            """ % (sys.executable, django), prefix="tpyr")
        self.addCleanup(p.close)
        code, said = p.run([{"order": 17}, {"nothing": True}])
        self.assertEqual(code, 1, said)
        self.assertEqual(p.results(), [{"order": 17, "invoice": "INV-17", "stage": "invoice"}], said)
        self.assertIn("an invoice needs an order id", p.dead("invoice"))


if __name__ == "__main__":
    unittest.main()
