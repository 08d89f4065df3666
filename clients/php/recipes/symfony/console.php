<?php
// A minimal `bin/console` for the Symfony recipe's test: Symfony's real
// Console (Debian's php-symfony-console, which Debian's composer brings)
// running the recipe's WarrenWorkCommand. In an app, bin/console and the
// kernel do this; here no kernel, the service made by hand.
//
//     exec: [php, console.php, app:warren-work]

declare(strict_types=1);

require getenv('SYMFONY_CONSOLE_AUTOLOAD') ?: '/usr/share/php/Symfony/Component/Console/autoload.php';
require getenv('WARREN_PHP_AUTOLOAD') ?: __DIR__ . '/../../WarrenStage.php';
require __DIR__ . '/../laravel/InvoiceStage.php';
require __DIR__ . '/WarrenWorkCommand.php';

$console = new Symfony\Component\Console\Application('shop');
$console->add(new App\Command\WarrenWorkCommand(new App\Stages\InvoiceStage()));
$console->run();
