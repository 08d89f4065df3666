<?php
// The Laravel recipe's stage: a plain class (app/Stages/InvoiceStage.php),
// so that it is tested with Warren\Testing and without the framework. In
// the app it uses Eloquent, config, the container as any app code does.

declare(strict_types=1);

namespace App\Stages;

use Warren\{Context, Dead, Retry};

final class InvoiceStage
{
    public function __invoke(array $body, Context $ctx): array
    {
        if (!isset($body['order'])) {
            throw new Dead('an invoice needs an order id');
        }
        if (!empty($body['busy'])) {
            throw new Retry('the billing database is busy', 5);
        }
        // Order::findOrFail($body['order']) ... in a real app
        return ['order' => $body['order'], 'invoice' => "INV-{$body['order']}", 'stage' => $ctx->stage];
    }
}
