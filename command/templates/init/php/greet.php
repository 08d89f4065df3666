<?php
// The stage `greet` of the pipeline {{name}} (pipeline.yaml).
//
// warren starts this program once per worker and keeps it running; the
// package warren-pipelines/stage reads the messages and answers warren.

require __DIR__ . '/vendor/autoload.php';

use Warren\{Context, Dead, Worker};

(new Worker())
    // {"name": "Ada"} -> {"name": "Ada", "greeting": "Hello, Ada!"}
    ->stage('greet', function (array $body, Context $ctx): array {
        $name = $body['name'] ?? null;
        if (!is_string($name) || $name === '') {
            // Can never succeed: to the dead-letter queue, with this reason.
            throw new Dead('no name in the message');
        }
        // What is returned goes to the stage's outputs, confirmed by the
        // broker before the message is acknowledged. Any other exception:
        // retried later.
        return ['name' => $name, 'greeting' => "Hello, $name!"];
    })
    ->serve(); // until warren closes stdin
