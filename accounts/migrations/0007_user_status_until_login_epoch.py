from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('accounts', '0006_user_group_adds'),
    ]

    operations = [
        migrations.AddField(
            model_name='user',
            name='status_until',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='user',
            name='login_epoch',
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddIndex(
            model_name='user',
            index=models.Index(condition=models.Q(('status_until__isnull', False)), fields=['status_until'], name='user_status_until'),
        ),
    ]
