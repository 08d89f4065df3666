<?php
/**
 * The warren PHP helper without Composer: `require` this file and use the
 * classes of src/ (Warren\Worker, Warren\Stage, Warren\Context,
 * Warren\Dead, Warren\Retry, Warren\Testing, Warren\Client...). With
 * Composer, `composer require warren-pipelines/stage` and its autoloader do
 * the same (see README.md).
 */

declare(strict_types=1);

spl_autoload_register(static function (string $class): void {
    if (str_starts_with($class, 'Warren\\')) {
        $file = __DIR__ . '/src/' . str_replace('\\', '/', substr($class, 7)) . '.php';
        if (is_file($file)) {
            require $file;
        }
    }
});
