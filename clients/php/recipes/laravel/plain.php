<?php
// The Laravel recipe without Laravel: what `php artisan warren:work` does
// once the app booted (the same InvoiceStage, served). The recipe's test
// runs this.

declare(strict_types=1);

require getenv('WARREN_PHP_AUTOLOAD') ?: __DIR__ . '/../../WarrenStage.php';
require __DIR__ . '/InvoiceStage.php';

(new Warren\Worker())
    ->stage('invoice', new App\Stages\InvoiceStage())
    ->serve();
